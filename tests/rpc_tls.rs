//! Request/reply over TLS: the framing adapter and the RPC layer only see
//! a `Transport`, so the same client and service run over rustls.

mod rpc_support;
#[path = "tls/support.rs"]
mod tls_support;

use protoloop::ConnectOptions;
use protoloop::rpc::RpcOptions;
use rpc_support::*;

#[test]
fn calls_over_tls_with_backpressure_on_the_service() {
    let pki = tls_support::pki();
    let (server_tls, client_tls) = (pki.server(), pki.client());
    run(move |h| async move {
        // At most 2 requests waiting: the rest of what one TLS record
        // brought waits in the adapter until replies make room, which
        // only resume (not new bytes) can deliver.
        let gated = GatedAdder::new(&h, 20);
        let svc = gated.service().max_pending(2);
        let server = h
            .create_server(
                move || svc.protocol(),
                "127.0.0.1:0",
                protoloop::ServerOptions::default().tls(server_tls),
            )
            .unwrap();
        let a = addr(&server);
        let h2 = h.clone();
        let client = AdderClient::connect_with(&h, RpcOptions::new(), move |p| {
            let h = h2.clone();
            let opts = ConnectOptions::default().tls(client_tls.clone(), tls_support::localhost());
            async move { Ok(h.create_connection(move || p, a, opts).await?.0) }
        })
        .await
        .unwrap();
        let calls: Vec<_> = (0..20).map(|i| client.call(add(i, 1))).collect();
        until(&h, || gated.seen.get() == 2).await;
        for i in 0..20 {
            gated.gates.open(i);
        }
        for (i, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.unwrap().sum, i as i64 + 1);
        }
        assert!(gated.most_waiting.get() <= 2);
        client.close();
        server.close();
    });
}
