//! What a hostile server can make the client allocate: a frame header that declares 60 MB
//! costs the client memory only as the bytes arrive, not when the header does.
//!
//! A binary of its own, because it swaps in an allocator that records the largest single
//! allocation, and other tests running beside it would make their own.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::client::{next, recorder, Seen};
use common::peers::answer_handshake;
use common::within;
use estuary::client::{Client, ClientConfig};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// The system allocator, recording the largest allocation since [`Largest::reset`].
struct Largest;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

impl Largest {
    fn reset() {
        LARGEST.store(0, Ordering::SeqCst);
    }

    fn get() -> usize {
        LARGEST.load(Ordering::SeqCst)
    }
}

unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Largest = Largest;

/// A server binary frame header declaring `len` bytes of payload.
fn header(len: u64) -> Vec<u8> {
    let mut header = vec![0x82, 127];
    header.extend_from_slice(&len.to_be_bytes());
    header
}

#[tokio::test(flavor = "current_thread")]
async fn a_server_frame_declaring_60_mb_costs_the_client_only_what_arrived() {
    const DECLARED: usize = 60 << 20;
    const SENT: usize = 4096;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (go, gone) = tokio::sync::oneshot::channel::<()>();
    let (go_on, going_on) = tokio::sync::oneshot::channel::<()>();
    let (sent, mut sent_rx) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut stream = answer_handshake(stream, "")
            .await
            .expect("the client stayed");
        let _ = gone.await;
        let mut frame = header(DECLARED as u64);
        frame.extend(vec![b'x'; SENT]);
        stream.write_all(&frame).await.unwrap();
        sent.send(()).unwrap();
        // Then the rest, when the test says so: the message must still arrive whole.
        let _ = going_on.await;
        let mut rest = vec![b'x'; DECLARED - SENT];
        stream.write_all(&rest).await.unwrap();
        rest.clear();
        stream
    });

    let (handler, mut seen) = recorder(false);
    let config = ClientConfig::default()
        .with_max_message_size(64 << 20)
        .with_keepalive(None, Duration::from_secs(20));
    let client = Client::builder(format!("ws://{addr}/"))
        .config(config)
        .connect(handler)
        .await
        .expect("connects");
    assert!(matches!(next(&mut seen).await, Seen::Connected(_)));

    Largest::reset();
    go.send(()).unwrap();
    within("the server sent the header", sent_rx.recv()).await;
    // The client reads the header and the first bytes at once (it runs on this thread, and
    // the bytes are on loopback); no single allocation may approach the 60 MB the header
    // declared.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let early = Largest::get();
    go_on.send(()).unwrap();
    let message = match next(&mut seen).await {
        Seen::Message(message) => message,
        other => panic!("expected the 60 MB message, got {other:?}"),
    };
    assert_eq!(message.len(), DECLARED);
    assert!(message.as_bytes().iter().all(|&b| b == b'x'));
    println!(
        "largest allocation with {SENT} of {DECLARED} bytes arrived: {early} bytes; \
         after the whole message: {} bytes",
        Largest::get()
    );
    assert!(
        early < 1 << 20,
        "the client allocated {early} bytes at once after a header declaring {DECLARED}"
    );
    client.close(1000, "done").unwrap();
    within("client stop", client.closed()).await;
    drop(server);
}
