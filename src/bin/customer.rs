// Run: cargo run --release --bin customer -- --atm 127.0.0.1:33333 withdraw "Jane Doe" 100
//
// A customer of the talk's demo: sends one Request to the ATM and prints
// its Reply as `success=true balance=0`. Exits 1 if the ATM cannot be
// reached or closes without replying, 2 on bad arguments.

use std::process::ExitCode;

use protoloop::EventLoop;
use protoloop::demo::customer::Customer;
use protoloop::demo::session::Kind;
use protoloop::demo::wire::{describe, parse_kind};

const USAGE: &str = "usage: customer [--atm HOST:PORT] deposit|withdraw NAME AMOUNT
  --atm      the ATM's address (default 127.0.0.1:33333)
  --connect  the same (the name every client example takes)";

struct Cli {
    atm: String,
    kind: Kind,
    name: String,
    amount: f32,
}

fn parse(args: &[String]) -> Result<Cli, String> {
    let mut atm = "127.0.0.1:33333".to_string();
    let mut words = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--atm" || arg == "--connect" {
            atm = it
                .next()
                .cloned()
                .ok_or_else(|| format!("{arg} needs a value"))?;
        } else if let Some(v) = arg
            .strip_prefix("--atm=")
            .or_else(|| arg.strip_prefix("--connect="))
        {
            atm = v.to_string();
        } else if arg.starts_with("--") {
            return Err(format!("unexpected option `{arg}`"));
        } else {
            words.push(arg.clone());
        }
    }
    let [kind, name, amount] = words.as_slice() else {
        return Err(format!(
            "expected deposit|withdraw NAME AMOUNT, got {} arguments",
            words.len()
        ));
    };
    let kind = parse_kind(kind)?;
    let amount = match amount.parse::<f32>() {
        Ok(a) if a.is_finite() => a,
        _ => return Err(format!("AMOUNT: expected a number, got `{amount}`")),
    };
    Ok(Cli {
        atm,
        kind,
        name: name.clone(),
        amount,
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let cli = match parse(&args) {
        Ok(cli) => cli,
        Err(msg) => {
            eprintln!("customer: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let lp = match EventLoop::new() {
        Ok(lp) => lp,
        Err(e) => {
            eprintln!("customer: could not start the event loop: {e}");
            return ExitCode::FAILURE;
        }
    };
    let customer = Customer::new(&lp.handle(), cli.atm.as_str());
    match lp.run_until_complete(customer.request(cli.kind, &cli.name, cli.amount)) {
        Ok(Ok(reply)) => {
            println!("{}", describe(&reply));
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("customer: no reply from the ATM at {}: {e}", cli.atm);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("customer: the event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_atm_address_comes_from_atm_or_connect() {
        for a in [
            &["--atm", "127.0.0.1:1", "deposit", "Jane Doe", "5"][..],
            &["--atm=127.0.0.1:1", "deposit", "Jane Doe", "5"],
            &["--connect", "127.0.0.1:1", "deposit", "Jane Doe", "5"],
            &["deposit", "--connect=127.0.0.1:1", "Jane Doe", "5"],
        ] {
            let cli = parse(&args(a)).unwrap();
            assert_eq!(cli.atm, "127.0.0.1:1", "{a:?}");
            assert_eq!((cli.name.as_str(), cli.amount), ("Jane Doe", 5.0));
        }
        let cli = parse(&args(&["withdraw", "John Doe", "100"])).unwrap();
        assert_eq!(cli.atm, "127.0.0.1:33333");
        assert_eq!(
            parse(&args(&["deposit", "Jane Doe", "5", "--connect"])).err(),
            Some("--connect needs a value".to_string())
        );
    }
}
