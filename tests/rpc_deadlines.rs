//! Call deadlines of `RpcClient` at the edges of `Duration`. Deadline
//! expiry itself is tested in `rpc.rs`.

mod rpc_support;

use std::time::Duration;

use protoloop::rpc::RpcOptions;
use rpc_support::*;

/// `Duration::MAX` is the usual way to say "no deadline"; it must not
/// overflow the loop's clock (as `sleep` and `call_later` do not).
#[test]
fn a_call_timeout_of_duration_max_means_never() {
    run(|h| async move {
        let adder = adder();
        let server = serve(&h, move || adder.protocol());
        let opts = RpcOptions::new().call_timeout(Duration::MAX);
        let client = AdderClient::connect(&h, addr(&server), opts).await.unwrap();
        assert_eq!(client.call(add(3, 4)).await.unwrap().sum, 7);
        let reply = client.call_with_timeout(add(1, 1), Duration::MAX).await;
        assert_eq!(reply.unwrap().sum, 2);
        client.close();
        server.close();
    });
}
