// Run: cargo run --example adder_server -- --listen 127.0.0.1:8888
//
// The first demo of the talk, server side: each `AddRequest` (two
// integers, 2-byte-length-prefixed protobuf) is answered with an
// `AddReply` holding their sum. Try it with the adder_client example.
// Ctrl-C stops it.

use protoloop::proto::adder::{AddReply, AddRequest};
use protoloop::rpc::Service;
use protoloop::{EventLoop, ServerOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = match flag_value("--listen") {
        Some(addr) => addr,
        None => {
            eprintln!("usage: adder_server --listen HOST:PORT");
            std::process::exit(2);
        }
    };

    let lp = EventLoop::new()?;
    let h = lp.handle();

    // The whole server: a handler from request to reply. The service
    // frames, decodes, answers in request order and encodes.
    let adder = Service::new(|req: AddRequest| {
        let sum = i64::from(req.a) + i64::from(req.b);
        println!("{} + {} = {sum}", req.a, req.b);
        AddReply { sum }
    });
    let server = h.create_server(
        move || adder.protocol(),
        listen.as_str(),
        ServerOptions::default(),
    )?;
    for addr in server.local_addrs() {
        println!("adder listening on {addr}");
    }

    // Stop cleanly on Ctrl-C: the signal arrives as a loop callback.
    let stopper = h.clone();
    h.add_signal_handler(signal_hook::consts::SIGINT, move || stopper.stop())?;
    lp.run_forever()?;
    server.close();
    Ok(())
}

/// The value after `name` (`--listen ADDR` or `--listen=ADDR`).
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
