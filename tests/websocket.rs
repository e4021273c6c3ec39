//! HTTP upgrades pass through: a real WebSocket session through the proxy.

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use crate::support::Proxy;
use crate::support::config::proxy_to;

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    let socket = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let upstream = socket.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (stream, _) = socket.accept().await.expect("accept");
        let mut ws = tokio_tungstenite::accept_async(stream)
            .await
            .expect("ws handshake");
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                ws.send(msg).await.expect("echo back");
            }
        }
    });
    let proxy = Proxy::start(&proxy_to(upstream, ""));

    let (mut ws, response) =
        tokio_tungstenite::connect_async(format!("ws://{}/chat", proxy.addr()))
            .await
            .expect("WebSocket handshake through the proxy");
    assert_eq!(response.status(), 101);

    for text in ["hello", "through", "switchyard"] {
        ws.send(Message::text(text)).await.expect("send");
        let back = ws.next().await.expect("a reply").expect("a message");
        assert_eq!(back, Message::text(text));
    }
    ws.close(None).await.expect("close");
    drop(ws);
    server.abort();
}
