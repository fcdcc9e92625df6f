//! What a scenario reports: metrics (a number's name, unit and direction) and measurements
//! (one value of one metric, from one run).

use crate::servers::ServerKind;

/// Whether a larger value of a metric is better or worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
    /// Neither: the metric explains the others (CPU use), or compares within one server
    /// (the cross-node scenarios' own baselines and ratios), and gets no ratio.
    Neither,
}

impl Better {
    /// The word for it in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Better::Higher => "higher",
            Better::Lower => "lower",
            Better::Neither => "neither",
        }
    }
}

/// One number a scenario reports, as it appears in the table and the JSON.
#[derive(Debug)]
pub struct Metric {
    /// JSON key, e.g. `echo_msgs_per_s`.
    pub key: &'static str,
    /// Table label, e.g. `echo msgs/s`.
    pub label: &'static str,
    pub better: Better,
    /// Digits after the decimal point in the table.
    pub decimals: usize,
    /// Whether the table shows it (the JSON has every metric).
    pub in_table: bool,
    /// The server every other is compared with: raw fastwebsockets, unless another is the
    /// natural yardstick (the bare Estuary server for handshakes, tokio-tungstenite's
    /// broadcast for fan-out).
    pub reference: ServerKind,
}

impl Metric {
    /// Formats `value` for the table: thousands separated, `decimals` digits.
    pub fn format(&self, value: f64) -> String {
        let text = format!("{value:.*}", self.decimals);
        let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
        let mut grouped = String::new();
        for (i, digit) in whole.chars().enumerate() {
            if i > 0 && (whole.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(digit);
        }
        if fraction.is_empty() {
            grouped
        } else {
            format!("{grouped}.{fraction}")
        }
    }
}

/// A value of a metric, measured once.
#[derive(Debug)]
pub struct Measurement {
    pub metric: &'static Metric,
    pub value: f64,
}
