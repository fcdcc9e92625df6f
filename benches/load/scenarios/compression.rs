//! permessage-deflate: what compression costs and saves, on and off on the same server in
//! the same run. Estuary only: none of the baselines has compression.
//!
//! - Fan-out of a chat-sized JSON line (about 600 bytes as the chat delivers it) to
//!   10,000 subscribers, once with subscribers that offer compression and once with
//!   subscribers that do not: deliveries per second, bytes on the wire per delivery, and
//!   server CPU per delivery. A broadcast is compressed once, so compression should cost
//!   the server little more than a plain fan-out.
//! - Request/response of a 1 KiB JSON message on 500 connections, one in flight each,
//!   compressed both ways (the client sends it compressed, the server inflates it and
//!   compresses the echo) and plain: messages per second and server CPU per message.

use std::time::Duration;

use super::fan_out::{self, FanOutSettings};
use super::request_response::{self, RequestResponseSettings};
use super::Outcome;
use crate::client::Compression;
use crate::frames::{compressed_text_frame, text_frame, EncodedFrames};
use crate::metric::{Better, Measurement, Metric};
use crate::servers::{ServerKind, Target};

/// Settings of [`super::Scenario::Compression`].
#[derive(Debug, Clone)]
pub struct CompressionSettings {
    pub fan_out: FanOutSettings,
    pub request_response: RequestResponseSettings,
}

impl CompressionSettings {
    /// The fan-out and request/response scenarios' own settings.
    pub fn new(fan_out: FanOutSettings, request_response: RequestResponseSettings) -> Self {
        Self {
            fan_out,
            request_response,
        }
    }
}

/// The chat line every fan-out message carries: prose of a length chat lines have.
const CHAT_LINE: &str = "Has anyone tried the new release on the staging cluster yet? \
    The deploy went through, but the dashboards show the queue depth climbing every few \
    minutes, and I am not sure whether that is the new batching or the load test that \
    somebody left running over the weekend. If you have a minute, could you look at the \
    consumer lag graphs and tell me whether they look like last week's? Thanks, and sorry \
    for the noise on a Monday morning.";

/// The JSON of the request/response run: 1 KiB of an application's message.
fn json_message() -> String {
    let mut json = String::from(r#"{"type":"update","items":["#);
    let mut i = 0;
    while json.len() < 1000 {
        json.push_str(&format!(
            r#"{{"id":{i},"name":"item {i}","status":"active","price":{}.{:02}}},"#,
            10 + i * 3,
            i * 7 % 100
        ));
        i += 1;
    }
    json.truncate(1022);
    json.push_str("]}");
    json
}

/// A row of one server, compared with another row rather than with other servers: no
/// ratio.
const fn metric(key: &'static str, label: &'static str, decimals: usize) -> Metric {
    Metric {
        key,
        label,
        better: Better::Neither,
        decimals,
        in_table: true,
        reference: ServerKind::Estuary,
    }
}

const FAN_OUT_PLAIN: Metric = metric(
    "deflate_fan_out_plain_deliveries_per_s",
    "fan-out 10k × 600 B JSON deliveries/s, plain",
    0,
);
const FAN_OUT_DEFLATE: Metric = metric(
    "deflate_fan_out_deliveries_per_s",
    "fan-out 10k × 600 B JSON deliveries/s, deflate",
    0,
);
const FAN_OUT_WIRE_PLAIN: Metric = metric(
    "deflate_fan_out_plain_wire_bytes",
    "fan-out wire bytes/delivery, plain",
    0,
);
const FAN_OUT_WIRE_DEFLATE: Metric = metric(
    "deflate_fan_out_wire_bytes",
    "fan-out wire bytes/delivery, deflate",
    0,
);
const FAN_OUT_CPU_PLAIN: Metric = metric(
    "deflate_fan_out_plain_server_us",
    "fan-out server CPU µs/delivery, plain",
    2,
);
const FAN_OUT_CPU_DEFLATE: Metric = metric(
    "deflate_fan_out_server_us",
    "fan-out server CPU µs/delivery, deflate",
    2,
);
const FAN_OUT_CPU_RATIO: Metric = metric(
    "deflate_fan_out_cpu_ratio",
    "fan-out server CPU, deflate / plain",
    2,
);
const RR_PLAIN: Metric = metric(
    "deflate_rr_plain_msgs_per_s",
    "req/resp 500 × 1 KiB JSON msgs/s, plain",
    0,
);
const RR_DEFLATE: Metric = metric(
    "deflate_rr_msgs_per_s",
    "req/resp 500 × 1 KiB JSON msgs/s, deflate",
    0,
);
const RR_CPU_PLAIN: Metric = metric(
    "deflate_rr_plain_server_us",
    "req/resp 1 KiB JSON server CPU µs/msg, plain",
    1,
);
const RR_CPU_DEFLATE: Metric = metric(
    "deflate_rr_server_us",
    "req/resp 1 KiB JSON server CPU µs/msg, deflate",
    1,
);

/// Every metric of the scenario, in table order.
pub const METRICS: &[&Metric] = &[
    &FAN_OUT_PLAIN,
    &FAN_OUT_DEFLATE,
    &FAN_OUT_WIRE_PLAIN,
    &FAN_OUT_WIRE_DEFLATE,
    &FAN_OUT_CPU_PLAIN,
    &FAN_OUT_CPU_DEFLATE,
    &FAN_OUT_CPU_RATIO,
    &RR_PLAIN,
    &RR_DEFLATE,
    &RR_CPU_PLAIN,
    &RR_CPU_DEFLATE,
];

/// Runs each shape plain and compressed, taking turns, and reports both.
pub async fn run(target: &Target, settings: &CompressionSettings) -> anyhow::Result<Outcome> {
    let mut warnings = Vec::new();
    let plain = fan_out::measure(target, &settings.fan_out, Compression::Off, CHAT_LINE).await?;
    let deflate =
        fan_out::measure(target, &settings.fan_out, Compression::Offered, CHAT_LINE).await?;
    anyhow::ensure!(
        deflate.compressed_share > 0.99 && plain.compressed_share == 0.0,
        "compressed deliveries: {:.0}% with compression offered, {:.0}% without",
        deflate.compressed_share * 100.0,
        plain.compressed_share * 100.0
    );
    warnings.extend(plain.cpu.contention());
    warnings.extend(deflate.cpu.contention());
    let micros = |d: Duration| d.as_secs_f64() * 1e6;

    let json = json_message();
    let size = json.len();
    let rr = &settings.request_response;
    let frame = EncodedFrames::one(text_frame(&json));
    let (rr_plain, rr_plain_cpu) =
        request_response::in_flight(target, rr, frame, size, Compression::Off).await?;
    let frame = EncodedFrames::one(compressed_text_frame(&json));
    let (rr_deflate, rr_deflate_cpu) =
        request_response::in_flight(target, rr, frame, size, Compression::Offered).await?;
    warnings.extend(rr_plain_cpu.contention());
    warnings.extend(rr_deflate_cpu.contention());
    let per_message = |cpu: f64, rate: f64| cpu / 100.0 / rate * 1e6;

    let value = |metric: &'static Metric, value: f64| Measurement { metric, value };
    Ok(Outcome {
        measurements: vec![
            value(&FAN_OUT_PLAIN, plain.deliveries_per_s),
            value(&FAN_OUT_DEFLATE, deflate.deliveries_per_s),
            value(&FAN_OUT_WIRE_PLAIN, plain.wire_bytes),
            value(&FAN_OUT_WIRE_DEFLATE, deflate.wire_bytes),
            value(&FAN_OUT_CPU_PLAIN, micros(plain.server_cpu_per_delivery)),
            value(
                &FAN_OUT_CPU_DEFLATE,
                micros(deflate.server_cpu_per_delivery),
            ),
            value(
                &FAN_OUT_CPU_RATIO,
                deflate.server_cpu_per_delivery.as_secs_f64()
                    / plain.server_cpu_per_delivery.as_secs_f64(),
            ),
            value(&RR_PLAIN, rr_plain),
            value(&RR_DEFLATE, rr_deflate),
            value(&RR_CPU_PLAIN, per_message(rr_plain_cpu.server, rr_plain)),
            value(
                &RR_CPU_DEFLATE,
                per_message(rr_deflate_cpu.server, rr_deflate),
            ),
        ],
        warnings,
    })
}
