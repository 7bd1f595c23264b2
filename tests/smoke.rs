use std::cell::RefCell;
use std::rc::Rc;

use protoloop::{CloseReason, ConnectOptions, EventLoop, Protocol, ServerOptions, Transport};

struct Echo(Option<Transport>);
impl Protocol for Echo {
    fn connection_made(&mut self, t: Transport) {
        self.0 = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.0.as_ref().unwrap().write(data).unwrap();
    }
}

#[derive(Default)]
struct Collect {
    got: Rc<RefCell<Vec<u8>>>,
    lost: Rc<RefCell<Option<CloseReason>>>,
}
impl Protocol for Collect {
    fn data_received(&mut self, data: &[u8]) {
        self.got.borrow_mut().extend_from_slice(data);
    }
    fn connection_lost(&mut self, r: CloseReason) {
        *self.lost.borrow_mut() = Some(r);
    }
}

#[test]
fn echo_roundtrip() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let server = h
        .create_server(|| Echo(None), "127.0.0.1:0", ServerOptions::default())
        .unwrap();
    let addr = server.local_addrs()[0];
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = got.clone();
    let h2 = h.clone();
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let d2 = data.clone();
    lp.run_until_complete(async move {
        let (t, _p) = h2
            .create_connection(
                move || Collect {
                    got: g,
                    ..Default::default()
                },
                addr,
                ConnectOptions::default(),
            )
            .await
            .unwrap();
        t.write(&d2).unwrap();
        for _ in 0..2000 {
            if got.borrow().len() >= d2.len() {
                break;
            }
            h2.sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(*got.borrow(), d2);
        t.close();
    })
    .unwrap();
    let _ = data;
}
