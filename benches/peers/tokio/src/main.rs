//! The everyday Rust WebSocket broadcaster: tokio + tokio-tungstenite, one task per connection
//! reading, one task per connection writing from an unbounded channel, rooms in a map behind
//! locks. Same semantics as wsrelay: the path is the room, every message goes to every member,
//! the sender included. 4 KiB read buffers (tungstenite's default is 128 KiB), one runtime
//! worker thread per core.
//!
//! Usage: tokio-peer 127.0.0.1:0   → prints "listening on 127.0.0.1:PORT" when ready.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

type Tx = mpsc::UnboundedSender<Message>;
type Room = Arc<RwLock<HashMap<u64, Tx>>>;

#[derive(Default)]
struct Rooms {
    rooms: Mutex<HashMap<String, Room>>,
    next_id: AtomicU64,
}

impl Rooms {
    fn join(&self, path: &str, tx: Tx) -> (Room, u64) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let room = self
            .rooms
            .lock()
            .unwrap()
            .entry(path.to_string())
            .or_default()
            .clone();
        room.write().unwrap().insert(id, tx);
        (room, id)
    }

    fn leave(&self, path: &str, room: &Room, id: u64) {
        let mut rooms = self.rooms.lock().unwrap();
        let mut members = room.write().unwrap();
        members.remove(&id);
        if members.is_empty() && rooms.get(path).is_some_and(|r| Arc::ptr_eq(r, room)) {
            rooms.remove(path);
        }
    }
}

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024))
}

async fn serve(stream: TcpStream, rooms: Arc<Rooms>) {
    let _ = stream.set_nodelay(true);
    let mut path = String::new();
    // The callback's type is tungstenite's; its error variant (an HTTP response) is large.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        path = req.uri().path().to_string();
        Ok(resp)
    };
    let Ok(ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config())).await
    else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let (room, id) = rooms.join(&path, tx);
    // Writer: everything queued goes out with one flush.
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let close = m.is_close();
            if sink.feed(m).await.is_err() {
                return;
            }
            while let Ok(m) = rx.try_recv() {
                if sink.feed(m).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() || close {
                return;
            }
        }
    });
    while let Some(Ok(msg)) = source.next().await {
        match msg {
            Message::Text(_) | Message::Binary(_) => {
                let members = room.read().unwrap();
                for tx in members.values() {
                    let _ = tx.send(msg.clone());
                }
            }
            // A close frame: tungstenite queues the reply and sends it on the next read, which
            // then ends the stream.
            _ => {}
        }
    }
    rooms.leave(&path, &room, id);
    // Our channel sender is gone with the room entry: the writer ends once the queue is empty.
    let _ = writer.await;
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_io()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr).await.expect("bind");
        println!("listening on {}", listener.local_addr().unwrap());
        let _ = std::io::stdout().flush();
        let rooms = Arc::new(Rooms::default());
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(serve(stream, rooms.clone()));
        }
    });
}
