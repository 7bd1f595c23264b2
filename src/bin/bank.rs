// Run: cargo run --release --bin bank -- --listen 127.0.0.1:44444 --balance "Jane Doe=100"
//
// The bank of the talk's demo: answers each GetBalance(customer_id) with
// Response(customer_id, balance), in request order. Balances come from
// `--balance "NAME=AMOUNT"` (repeatable); without any, the demo's: Jane
// Doe 100, John Doe 500. Anybody else has 0. Prints
// `bank: listening on ADDR`, then one line per request; SIGTERM or SIGINT
// stops it (exit 0).

use std::process::ExitCode;
use std::time::Duration;

use protoloop::EventLoop;
use protoloop::demo::bank::{Bank, BankServer, DEMO_BALANCES, parse_balance};
use protoloop::demo::cli::{Flags, exit_status, stop_signal};

const USAGE: &str = "usage: bank [--listen HOST:PORT] [--balance NAME=AMOUNT]...
  --listen   where the ATM connects (default 127.0.0.1:44444; port 0 picks one)
  --balance  a customer's balance, repeatable; given any, they replace the
             demo's (Jane Doe=100, John Doe=500); anybody else has 0";

struct Cli {
    listen: String,
    balances: Vec<(String, f32)>,
}

fn parse(args: &[String]) -> Result<Cli, String> {
    let mut listen = "127.0.0.1:44444".to_string();
    let mut balances = Vec::new();
    let mut flags = Flags::new(args);
    while let Some(flag) = flags.next_flag() {
        match flag {
            "--listen" => listen = flags.value()?,
            "--balance" => balances
                .push(parse_balance(&flags.value()?).map_err(|e| format!("--balance: {e}"))?),
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    if balances.is_empty() {
        balances = DEMO_BALANCES
            .iter()
            .map(|(n, b)| (n.to_string(), *b))
            .collect();
    }
    Ok(Cli { listen, balances })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    exit_status("bank", USAGE, parse(&args), serve)
}

fn serve(cli: Cli) -> Result<(), String> {
    let lp = EventLoop::new().map_err(|e| format!("could not start the event loop: {e}"))?;
    let h = lp.handle();
    let bank = Bank::new(cli.balances)
        .on_request(|customer, balance| println!("bank: {customer} has {balance}"));
    let server = BankServer::start(&h, &cli.listen, bank.service())
        .map_err(|e| format!("could not listen on {}: {e}", cli.listen))?;
    println!("bank: listening on {}", server.local_addr());

    let stop = stop_signal(&h)?;
    lp.run_until_complete(async move {
        let sig = stop.await.unwrap_or("a stop signal");
        eprintln!("bank: got {sig}: shutting down");
        server.shutdown(Duration::from_secs(1)).await;
    })
    .map_err(|e| format!("the event loop failed: {e}"))
}
