//! Peer baseline: tokio-tungstenite on tokio, as its own echo-server example
//! serves: `accept_async` per connection on tokio's multi-thread runtime, data
//! messages forwarded back through the stream's split halves. The listening
//! address comes from the command line (default 127.0.0.1:8080). Run by
//! scripts/peers.sh.

use futures_util::{future, StreamExt, TryStreamExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let listener = TcpListener::bind(&addr).await.expect("bind");
    println!("Listening on: {addr}");
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(accept_connection(stream));
    }
}

async fn accept_connection(stream: TcpStream) {
    let Ok(ws_stream) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (write, read) = ws_stream.split();
    let _ = read
        .try_filter(|msg| future::ready(msg.is_text() || msg.is_binary()))
        .forward(write)
        .await;
}
