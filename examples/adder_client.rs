// Run: cargo run --example adder_client -- --connect 127.0.0.1:8888
//
// The first demo of the talk, client side: asks the adder_server example
// for 3 + 4 and prints the answer, 7.

use std::time::Duration;

use protoloop::EventLoop;
use protoloop::proto::adder::{AddReply, AddRequest};
use protoloop::rpc::{RpcClient, RpcError, RpcOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let target = match flag_value("--connect") {
        Some(addr) => addr,
        None => {
            eprintln!("usage: adder_client --connect HOST:PORT");
            std::process::exit(2);
        }
    };

    let lp = EventLoop::new()?;
    let h = lp.handle();
    let sum = lp.run_until_complete(async move {
        // Don't wait for ever on a server that never answers.
        let opts = RpcOptions::<AddRequest, AddReply>::new().call_timeout(Duration::from_secs(5));
        let client = RpcClient::connect(&h, target, opts).await?;
        // `call` returns a future of the reply: await it like a function.
        let reply = client.call(AddRequest { a: 3, b: 4 }).await?;
        client.close();
        Ok::<_, RpcError>(reply.sum)
    })?;

    match sum {
        Ok(sum) => {
            println!("{sum}");
            Ok(())
        }
        Err(e) => {
            eprintln!("adder_client: {e}");
            std::process::exit(1);
        }
    }
}

/// The value after `name` (`--connect ADDR` or `--connect=ADDR`).
fn flag_value(name: &str) -> Option<String> {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == name {
            return args.next();
        }
        if let Some(v) = arg.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            return Some(v.to_string());
        }
    }
    None
}
