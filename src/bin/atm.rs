// Run: cargo run --release --bin atm -- demo
//  or: cargo run --release --bin atm -- --bank 127.0.0.1:44444 --listen 127.0.0.1:33333
//
// The ATM of the talk's demo. `atm demo` runs the whole demo: a bank in
// this process, this same program as the ATM child process, and the
// talk's three customers. Otherwise it is the ATM server: it connects to
// the bank (retrying for a few seconds), prints `atm: listening on ADDR`
// on stdout, and serves customers until SIGTERM or SIGINT, then exits 0.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::process::ExitCode;
use std::task::Poll;
use std::time::Duration;

use protoloop::EventLoop;
use protoloop::demo::atm::{Atm, AtmOptions, DEFAULT_BANK, DEFAULT_LISTEN};
use protoloop::demo::child::LISTENING;
use protoloop::demo::cli::{Flags, exit_status, stop_signal};
use protoloop::demo::tour;

const USAGE: &str = "usage: atm [--bank HOST:PORT] [--listen HOST:PORT] [--bank-wait SECONDS]
       atm demo
  --bank       the bank's address (default 127.0.0.1:44444)
  --listen     where customers connect (default 127.0.0.1:33333; port 0 picks one)
  --bank-wait  how long to keep trying to reach the bank at start (default 5)
  demo         run the whole demo: a bank, this program as the ATM, three customers";

/// How long customers waiting for the bank get to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

struct Cli {
    bank: String,
    listen: String,
    bank_wait: Duration,
}

fn parse(args: &[String]) -> Result<Cli, String> {
    let mut cli = Cli {
        bank: DEFAULT_BANK.into(),
        listen: DEFAULT_LISTEN.into(),
        bank_wait: Duration::from_secs(5),
    };
    let mut flags = Flags::new(args);
    while let Some(flag) = flags.next_flag() {
        match flag {
            "--bank" => cli.bank = flags.value()?,
            "--listen" => cli.listen = flags.value()?,
            "--bank-wait" => {
                let v = flags.value()?;
                cli.bank_wait = v
                    .parse::<f64>()
                    .ok()
                    .and_then(|s| Duration::try_from_secs_f64(s).ok())
                    .ok_or_else(|| {
                        format!("--bank-wait: expected a number of seconds, got `{v}`")
                    })?;
            }
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    Ok(cli)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if args.first().is_some_and(|a| a == "demo") {
        if args.len() > 1 {
            eprintln!("atm: `demo` takes no arguments\n{USAGE}");
            return ExitCode::from(2);
        }
        return demo();
    }
    exit_status("atm", USAGE, parse(&args), serve)
}

/// The ATM server, until SIGTERM or SIGINT.
fn serve(cli: Cli) -> Result<(), String> {
    let lp = EventLoop::new().map_err(|e| format!("could not start the event loop: {e}"))?;
    let h = lp.handle();
    // Watch the signals before anything else, so that one arriving while
    // we wait for the bank still ends us with exit status 0.
    let stop = stop_signal(&h)?;
    let opts = AtmOptions::new()
        .bank(cli.bank.as_str())
        .listen(cli.listen)
        .bank_wait(cli.bank_wait);
    let run = async move {
        let atm = match first(Atm::start(&h, opts), stop.clone()).await {
            Either::Left(started) => started.map_err(|e| e.to_string())?,
            Either::Right(sig) => {
                let sig = sig.unwrap_or("a stop signal");
                eprintln!("atm: got {sig} before the bank answered; exiting");
                return Ok(());
            }
        };
        // Tests and the demo wait for this line: print the real port.
        println!("{LISTENING}{}", atm.local_addr());
        let sig = stop.await.unwrap_or("a stop signal");
        eprintln!(
            "atm: got {sig}: shutting down ({} customers connected, {} served, {} dropped)",
            atm.customers(),
            atm.stats().served,
            atm.stats().dropped
        );
        atm.shutdown(SHUTDOWN_GRACE).await;
        Ok(())
    };
    lp.run_until_complete(run)
        .map_err(|e| format!("the event loop failed: {e}"))?
}

/// `atm demo`: the whole demo, with this very program as the ATM.
fn demo() -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("demo: cannot find this program to start it as the ATM: {e}");
            return ExitCode::FAILURE;
        }
    };
    let lp = match EventLoop::new() {
        Ok(lp) => lp,
        Err(e) => {
            eprintln!("demo: could not start the event loop: {e}");
            return ExitCode::FAILURE;
        }
    };
    let h = lp.handle();
    let result =
        lp.run_until_complete(async move { tour::run(&h, exe, |l| println!("{l}")).await });
    match result {
        Ok(Ok(true)) => ExitCode::SUCCESS,
        Ok(Ok(false)) => ExitCode::FAILURE,
        Ok(Err(e)) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("demo: the event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}

enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Whichever of `a` and `b` finishes first (the other is dropped).
async fn first<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let mut a = pin!(a);
    let mut b = pin!(b);
    poll_fn(|cx| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(v));
        }
        if let Poll::Ready(v) = b.as_mut().poll(cx) {
            return Poll::Ready(Either::Right(v));
        }
        Poll::Pending
    })
    .await
}
