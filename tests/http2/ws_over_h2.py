"""WebSockets over HTTP/2 (RFC 8441), driven by peers nobody on the project wrote: the
`h2` package speaks HTTP/2 and opens every WebSocket as an extended CONNECT stream of
one TCP connection (h2c, prior knowledge), and the `websockets` package's sans-I/O
protocol frames and checks the WebSocket traffic on each stream. Run by tests/http2.rs.

usage: ws_over_h2.py HOST PORT PATH TOKEN SOCKETS

Opens SOCKETS WebSockets with `Authorization: Bearer TOKEN`, half of them offering
permessage-deflate and all of them the subprotocols `chat.v2, echo.v1`; halfway
through, one handshake with a wrong token and one CONNECT for another protocol. Each
WebSocket sends a text and a binary message (large enough together that both sides
must wait for the other's WINDOW_UPDATEs), checks both come back intact, then closes
with 1000. Prints one JSON object with what it saw, for the Rust test to check; exits
non-zero only when it could not run.
"""

import json
import os
import select
import socket
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Close, Opcode
from websockets.headers import build_extension, parse_extension
from websockets.protocol import Protocol, Side

DEADLINE_SECONDS = 60


class Socket:
    """One WebSocket on one stream, and what it saw."""

    def __init__(self, index, deflate):
        self.index = index
        self.deflate = deflate
        self.protocol = None
        self.status = None
        self.headers = {}
        self.text = f"stream {index}: κόσμε 🌊 " * (1 + index % 7)
        self.binary = os.urandom(2000 + 1500 * index)
        self.echoed = []
        self.close_code = None
        self.ended = False
        self.reset = None
        self.closing = False

    def report(self):
        return {
            "status": self.status,
            "protocol": self.headers.get("sec-websocket-protocol"),
            "extensions": self.headers.get("sec-websocket-extensions"),
            "text_ok": len(self.echoed) > 0 and self.echoed[0] == ("text", self.text),
            "binary_ok": len(self.echoed) > 1 and self.echoed[1] == ("binary", self.binary),
            "messages": len(self.echoed),
            "close_code": self.close_code,
            "ended": self.ended,
            "reset": self.reset,
        }


class Refused:
    """A handshake that should be refused, and its answer."""

    def __init__(self, name):
        self.name = name
        self.status = None
        self.headers = {}
        self.body = b""
        self.ended = False
        self.reset = None

    def report(self):
        return {
            "status": self.status,
            "www_authenticate": self.headers.get("www-authenticate"),
            "connection": self.headers.get("connection"),
            "body": self.body.decode("utf-8", "replace").strip(),
            "ended": self.ended,
            "reset": self.reset,
        }


def main():
    host, port, path, token, sockets = sys.argv[1:6]
    port, sockets = int(port), int(sockets)
    deadline = time.monotonic() + DEADLINE_SECONDS

    tcp = socket.create_connection((host, port), timeout=10)
    tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = h2.connection.H2Connection(
        config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    conn.initiate_connection()
    tcp.sendall(conn.data_to_send())

    streams = {}
    pending = {}  # stream id -> bytearray still to send (flow control)
    end_after = set()  # stream ids to end once their pending bytes are out
    terminated = None
    settings_seen = False

    def flush():
        for stream_id, buf in list(pending.items()):
            while buf:
                try:
                    window = conn.local_flow_control_window(stream_id)
                except h2.exceptions.StreamClosedError:
                    buf.clear()
                    break
                n = min(len(buf), window, conn.max_outbound_frame_size)
                if n <= 0:
                    break
                conn.send_data(stream_id, bytes(buf[:n]))
                del buf[:n]
            if not buf and stream_id in end_after:
                end_after.discard(stream_id)
                try:
                    conn.end_stream(stream_id)
                except h2.exceptions.StreamClosedError:
                    pass
        out = conn.data_to_send()
        if out:
            tcp.sendall(out)

    def send_ws(stream_id, sock):
        for chunk in sock.protocol.data_to_send():
            if chunk == b"":
                end_after.add(stream_id)
            else:
                pending.setdefault(stream_id, bytearray()).extend(chunk)

    def open_stream(headers):
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(stream_id, headers, end_stream=False)
        return stream_id

    def connect_headers(protocol, authorization, deflate):
        headers = [
            (":method", "CONNECT"),
            (":protocol", protocol),
            (":scheme", "http"),
            (":path", path),
            (":authority", f"{host}:{port}"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-protocol", "chat.v2, echo.v1"),
        ]
        if authorization:
            headers.append(("authorization", authorization))
        if deflate:
            offer = ClientPerMessageDeflateFactory().get_request_params()
            headers.append(
                ("sec-websocket-extensions", build_extension([("permessage-deflate", offer)]))
            )
        return headers

    def on_response(sock, headers):
        sock.headers = {name: value for name, value in headers if not name.startswith(":")}
        sock.status = int(dict(headers)[":status"])
        if not isinstance(sock, Socket) or sock.status != 200:
            return
        sock.protocol = Protocol(Side.CLIENT, max_size=None)
        agreed = sock.headers.get("sec-websocket-extensions")
        if agreed:
            [(name, params)] = parse_extension(agreed)
            assert name == "permessage-deflate", agreed
            sock.protocol.extensions = [
                ClientPerMessageDeflateFactory().process_response_params(params, [])
            ]
        sock.protocol.send_text(sock.text.encode())
        sock.protocol.send_binary(sock.binary)

    def on_data(stream_id, sock, data):
        if isinstance(sock, Refused):
            sock.body += data
            return
        sock.protocol.receive_data(data)
        for frame in sock.protocol.events_received():
            if frame.opcode == Opcode.TEXT:
                sock.echoed.append(("text", frame.data.decode()))
            elif frame.opcode == Opcode.BINARY:
                sock.echoed.append(("binary", bytes(frame.data)))
            elif frame.opcode == Opcode.CLOSE:
                sock.close_code = Close.parse(frame.data).code
        if len(sock.echoed) == 2 and not sock.closing:
            sock.closing = True
            sock.protocol.send_close(1000, "done")

    # The server's SETTINGS come first: it must offer extended CONNECT.
    while not settings_seen and time.monotonic() < deadline:
        data = tcp.recv(65536)
        if not data:
            raise SystemExit("the server closed the connection before its SETTINGS")
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RemoteSettingsChanged):
                settings_seen = True
        tcp.sendall(conn.data_to_send())
    connect_enabled = conn.remote_settings.enable_connect_protocol == 1

    sockets_by_index = []
    refused = {}
    for index in range(sockets):
        if index == sockets // 2:
            wrong = open_stream(connect_headers("websocket", "Bearer wrong-token", False))
            streams[wrong] = refused["wrong_token"] = Refused("wrong_token")
            other = open_stream(connect_headers("webtransport", f"Bearer {token}", False))
            streams[other] = refused["other_protocol"] = Refused("other_protocol")
        sock = Socket(index, deflate=index % 2 == 0)
        stream_id = open_stream(connect_headers("websocket", f"Bearer {token}", sock.deflate))
        streams[stream_id] = sock
        sockets_by_index.append(sock)
    flush()

    def done():
        return all(s.ended or s.reset is not None for s in streams.values())

    tcp.setblocking(False)
    while not done() and terminated is None and time.monotonic() < deadline:
        readable, _, _ = select.select([tcp], [], [], 0.5)
        if not readable:
            continue
        try:
            data = tcp.recv(1 << 20)
        except BlockingIOError:
            continue
        if not data:
            terminated = "the server closed the TCP connection"
            break
        for event in conn.receive_data(data):
            stream_id = getattr(event, "stream_id", None)
            sock = streams.get(stream_id)
            if isinstance(event, h2.events.ResponseReceived):
                on_response(sock, event.headers)
            elif isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
                on_data(stream_id, sock, event.data)
            elif isinstance(event, h2.events.StreamEnded):
                sock.ended = True
                if isinstance(sock, Socket) and sock.protocol is not None:
                    sock.protocol.receive_eof()
                    # The server ended its side after the close handshake: end ours.
                    end_after.add(stream_id)
            elif isinstance(event, h2.events.StreamReset):
                if sock is not None:
                    sock.reset = int(event.error_code)
                pending.pop(stream_id, None)
                end_after.discard(stream_id)
            elif isinstance(event, h2.events.ConnectionTerminated):
                terminated = f"GOAWAY {event.error_code!r}"
        for stream_id, sock in streams.items():
            if isinstance(sock, Socket) and sock.protocol is not None:
                send_ws(stream_id, sock)
        flush()

    print(
        json.dumps(
            {
                "connect_protocol_enabled": connect_enabled,
                "tcp_connections": 1,
                "terminated": terminated,
                "timed_out": not done(),
                "sockets": [s.report() for s in sockets_by_index],
                "refused": {name: r.report() for name, r in refused.items()},
            }
        )
    )
    tcp.close()


if __name__ == "__main__":
    main()
