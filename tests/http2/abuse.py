"""HTTP/2 abuse against the server, with Python's `h2` package. Run by tests/http2.rs.

usage: abuse.py HOST PORT PATH TOKEN

Each check runs on a connection of its own, and a well-behaved WebSocket stream is
opened on a further connection at the end to show the server still serves:

- big_header: an extended CONNECT whose header list is larger than the server allows
  (max_header_size, advertised as SETTINGS_MAX_HEADER_LIST_SIZE).
- rapid_reset: the 2023 attack (CVE-2023-44487): 200 streams opened and cancelled at
  once, each HEADERS followed at once by RST_STREAM(CANCEL), in one write.

Prints one JSON object with what each connection saw.
"""

import json
import socket
import sys
import time

import h2.config
import h2.connection
import h2.errors
import h2.exceptions
import h2.events

DEADLINE_SECONDS = 20


def connect(host, port):
    tcp = socket.create_connection((host, port), timeout=10)
    conn = h2.connection.H2Connection(
        config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    conn.initiate_connection()
    tcp.sendall(conn.data_to_send())
    return tcp, conn


def headers(host, port, path, token, extra=()):
    return [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "http"),
        (":path", path),
        (":authority", f"{host}:{port}"),
        ("sec-websocket-version", "13"),
        ("authorization", f"Bearer {token}"),
        *extra,
    ]


def pump(tcp, conn, until):
    """Reads events until `until(events_so_far)` or the connection ends; returns them."""
    seen = []
    deadline = time.monotonic() + DEADLINE_SECONDS
    tcp.settimeout(0.5)
    while time.monotonic() < deadline and not until(seen):
        try:
            data = tcp.recv(65536)
        except socket.timeout:
            continue
        except ConnectionError:
            seen.append("connection reset")
            break
        if not data:
            seen.append("connection closed")
            break
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            seen.append(f"protocol error: {error}")
            break
        seen.extend(events)
        out = conn.data_to_send()
        if out:
            try:
                tcp.sendall(out)
            except ConnectionError:
                seen.append("connection reset")
                break
    return seen


def describe(events):
    out = []
    for event in events:
        if isinstance(event, str):
            out.append(event)
        elif isinstance(event, h2.events.ResponseReceived):
            out.append(f"response {dict(event.headers)[':status']}")
        elif isinstance(event, h2.events.StreamReset):
            out.append(f"reset {h2.errors.ErrorCodes(event.error_code).name}")
        elif isinstance(event, h2.events.ConnectionTerminated):
            out.append(f"goaway {h2.errors.ErrorCodes(event.error_code).name}")
    return out


def answered(events):
    return any(
        isinstance(e, (h2.events.ResponseReceived, h2.events.StreamReset, h2.events.ConnectionTerminated))
        or isinstance(e, str)
        for e in events
    )


def terminated(events):
    return any(isinstance(e, (h2.events.ConnectionTerminated, str)) for e in events)


def big_header(host, port, path, token):
    tcp, conn = connect(host, port)
    pump(tcp, conn, lambda seen: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in seen))
    limit = conn.remote_settings.max_header_list_size
    stream = conn.get_next_available_stream_id()
    conn.send_headers(stream, headers(host, port, path, token, [("x-padding", "a" * 100_000)]))
    tcp.sendall(conn.data_to_send())
    seen = pump(tcp, conn, answered)
    tcp.close()
    return {"advertised_max_header_list_size": limit, "events": describe(seen)}


def rapid_reset(host, port, path, token):
    tcp, conn = connect(host, port)
    pump(tcp, conn, lambda seen: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in seen))
    for _ in range(200):
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, headers(host, port, path, token))
        conn.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
    try:
        tcp.sendall(conn.data_to_send())
    except ConnectionError:
        pass
    seen = pump(tcp, conn, terminated)
    tcp.close()
    return {"events": describe(seen)[-3:]}


def one_websocket(host, port, path, token):
    tcp, conn = connect(host, port)
    stream = conn.get_next_available_stream_id()
    conn.send_headers(stream, headers(host, port, path, token))
    tcp.sendall(conn.data_to_send())
    seen = pump(tcp, conn, lambda seen: any(isinstance(e, h2.events.ResponseReceived) for e in seen))
    tcp.close()
    return {"events": describe(seen)}


def main():
    host, port, path, token = sys.argv[1:5]
    port = int(port)
    print(
        json.dumps(
            {
                "big_header": big_header(host, port, path, token),
                "rapid_reset": rapid_reset(host, port, path, token),
                "afterwards": one_websocket(host, port, path, token),
            }
        )
    )


if __name__ == "__main__":
    main()
