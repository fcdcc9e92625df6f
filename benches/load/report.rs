//! The results: every measurement of every round, then the medians as a table (markdown,
//! ready for the README), as JSON, and as the rows of the chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::cpu;
use crate::machine::Machine;
use crate::metric::{Better, Measurement, Metric};
use crate::scenarios::{Scenario, Settings};
use crate::servers::ServerKind;

/// The server most ratios are relative to; a metric may name another
/// ([`Metric::reference`]).
const REFERENCE: ServerKind = ServerKind::Fastwebsockets;

/// Everything measured in one run, and everything that went wrong.
#[derive(Debug)]
pub struct Report {
    settings: Settings,
    servers: Vec<ServerKind>,
    scenarios: Vec<Scenario>,
    machine: Machine,
    samples: BTreeMap<(&'static str, ServerKind), Vec<Sample>>,
    skipped: Vec<(ServerKind, String)>,
    failures: Vec<Note>,
    warnings: Vec<Note>,
    /// How busy each CPU was just before the rounds, from 0 to 1.
    busy_before_run: Vec<f64>,
}

/// One round's value of a metric.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// The round it was measured in, counted from 0.
    round: usize,
    value: f64,
    /// Measured while other work used the cores: a median leaves it out if it can.
    noisy: bool,
}

/// The median of a metric for a server, over its clean samples when there are any.
#[derive(Debug, Clone, Copy)]
struct Summary {
    median: f64,
    /// Samples the median is over.
    count: usize,
    /// Whether every sample was noisy, so the median is over noisy ones.
    noisy: bool,
}

impl Summary {
    fn of(samples: &[Sample]) -> Option<Self> {
        let clean: Vec<f64> = samples
            .iter()
            .filter(|s| !s.noisy)
            .map(|s| s.value)
            .collect();
        let (values, noisy) = if clean.is_empty() {
            (samples.iter().map(|s| s.value).collect(), true)
        } else {
            (clean, false)
        };
        Some(Self {
            median: median(&values)?,
            count: values.len(),
            noisy,
        })
    }
}

/// What went wrong with a scenario against a server in one round: why it failed, or why
/// its figures are in doubt.
#[derive(Debug)]
struct Note {
    round: usize,
    scenario: Scenario,
    server: ServerKind,
    message: String,
}

impl Note {
    fn json(&self) -> Value {
        json!({
            "round": self.round + 1,
            "scenario": self.scenario.name(),
            "server": self.server.name(),
            "message": self.message,
        })
    }
}

/// One row of the chart: a metric's ratio for each server, where there is one.
#[derive(Debug)]
pub struct ChartRow {
    pub label: String,
    pub better: Better,
    pub reference: ServerKind,
    pub ratios: Vec<(ServerKind, Option<f64>)>,
}

impl Report {
    /// An empty report for a run of `scenarios` with `settings` against `servers`, which
    /// become the table's columns in this order, on `machine`.
    pub fn new(
        settings: &Settings,
        servers: &[ServerKind],
        scenarios: &[Scenario],
        machine: Machine,
    ) -> Self {
        Self {
            settings: settings.clone(),
            servers: servers.to_vec(),
            scenarios: scenarios.to_vec(),
            machine,
            samples: BTreeMap::new(),
            skipped: Vec::new(),
            failures: Vec::new(),
            warnings: Vec::new(),
            busy_before_run: Vec::new(),
        }
    }

    /// Adds `round`'s value of a metric for `server`; `noisy` if other work used the
    /// cores meanwhile.
    pub fn record(
        &mut self,
        round: usize,
        server: ServerKind,
        measurement: Measurement,
        noisy: bool,
    ) {
        self.samples
            .entry((measurement.metric.key, server))
            .or_default()
            .push(Sample {
                round,
                value: measurement.value,
                noisy,
            });
    }

    /// Notes how busy each CPU was (0 to 1) before the rounds began.
    pub fn record_busy_before_run(&mut self, busy: Vec<f64>) {
        self.busy_before_run = busy;
    }

    /// Notes that `server` was not run at all, and why.
    pub fn record_skipped(&mut self, server: ServerKind, error: &anyhow::Error) {
        self.skipped.push((server, format!("{error:#}")));
    }

    /// Notes that `scenario` failed against `server` in `round` (counted from 0).
    pub fn record_failure(
        &mut self,
        round: usize,
        scenario: Scenario,
        server: ServerKind,
        error: &anyhow::Error,
    ) {
        self.failures.push(Note {
            round,
            scenario,
            server,
            message: format!("{error:#}"),
        });
    }

    /// Notes a reason to doubt what `scenario` measured on `server` in `round`.
    pub fn record_warning(
        &mut self,
        round: usize,
        scenario: Scenario,
        server: ServerKind,
        warning: String,
    ) {
        self.warnings.push(Note {
            round,
            scenario,
            server,
            message: warning,
        });
    }

    /// How many scenario runs failed.
    pub fn failure_count(&self) -> usize {
        self.failures.len()
    }

    /// The machine the run is on.
    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// The medians table: a row per metric, a column per server, each cell the median over
    /// rounds (over the clean ones, if any; `noisy` if none was; `[k/n]` when it is over k
    /// of n rounds) and, where more or less is better, the ratio to the row's reference
    /// (raw fastwebsockets unless the row names another; see [`Report::ratio`]). `–`: the
    /// scenario has nothing to measure on that server.
    pub fn table(&self) -> String {
        let mut header = vec![format!(
            "median of {} round(s) (median ratio to {})",
            self.settings.rounds,
            REFERENCE.name()
        )];
        header.extend(self.servers.iter().map(|server| server.name().to_owned()));
        let mut rows = vec![header];
        for (scenario, metric) in self.metrics().filter(|(_, metric)| metric.in_table) {
            let mut row = vec![row_label(metric)];
            row.extend(
                self.servers
                    .iter()
                    .map(|&server| self.cell(scenario, metric, server)),
            );
            rows.push(row);
        }

        let mut table = markdown_table(&rows);
        let _ = writeln!(table, "machine: {}", self.machine.line());
        for (server, reason) in &self.skipped {
            let _ = writeln!(table, "skipped {}: {reason}", server.name());
        }
        if !self.failures.is_empty() {
            let _ = writeln!(
                table,
                "{} scenario run(s) failed; see the messages above",
                self.failures.len()
            );
        }
        if !self.warnings.is_empty() {
            let _ = writeln!(
                table,
                "{} scenario run(s) shared their cores with other work: left out of the medians \
                 where a clean run exists; see !! above",
                self.warnings.len()
            );
        }
        table
    }

    fn cell(&self, scenario: Scenario, metric: &Metric, server: ServerKind) -> String {
        if !scenario.runs_on(server) {
            return "–".to_owned();
        }
        if self.skipped.iter().any(|(skipped, _)| *skipped == server) {
            return "skipped".to_owned();
        }
        let Some(summary) = self.summary(metric, server) else {
            return "failed".to_owned();
        };
        let mut cell = metric.format(summary.median);
        if let Some(ratio) = self.ratio(metric, server) {
            let _ = write!(cell, " ({ratio:.2}x)");
        }
        if summary.noisy {
            cell.push_str(" noisy");
        }
        if summary.count < self.settings.rounds {
            let _ = write!(cell, " [{}/{}]", summary.count, self.settings.rounds);
        }
        cell
    }

    fn summary(&self, metric: &Metric, server: ServerKind) -> Option<Summary> {
        Summary::of(self.samples.get(&(metric.key, server))?)
    }

    /// `server`'s value over the reference's, for metrics where that means something: the
    /// median over rounds of the two measured in the same round, clean ones if any round has
    /// both clean, else noisy ones if neither server has a clean one (a clean value over a
    /// noisy one would compare the noise).
    ///
    /// Pairing by round matters on a shared machine: within a round a scenario runs the
    /// servers back to back, while from one round to the next the machine's speed drifts by
    /// more than the differences measured.
    fn ratio(&self, metric: &Metric, server: ServerKind) -> Option<f64> {
        if metric.better == Better::Neither {
            return None;
        }
        let reference = self.samples.get(&(metric.key, metric.reference))?;
        let value = self.samples.get(&(metric.key, server))?;
        let ratios = |noisy: bool| -> Vec<f64> {
            value
                .iter()
                .filter_map(|sample| {
                    let paired = reference.iter().find(|r| r.round == sample.round)?;
                    (sample.noisy == noisy && paired.noisy == noisy && paired.value > 0.0)
                        .then(|| sample.value / paired.value)
                })
                .collect()
        };
        let clean = ratios(false);
        if !clean.is_empty() {
            return median(&clean);
        }
        let both_noisy = Summary::of(reference)?.noisy && Summary::of(value)?.noisy;
        if both_noisy {
            median(&ratios(true))
        } else {
            None
        }
    }

    /// Every metric of the scenarios run, in table order, with its scenario.
    fn metrics(&self) -> impl Iterator<Item = (Scenario, &'static Metric)> + '_ {
        self.scenarios.iter().flat_map(|&scenario| {
            scenario
                .metrics()
                .iter()
                .map(move |&metric| (scenario, metric))
        })
    }

    /// The table's rows that have ratios, for the chart.
    pub fn chart_rows(&self) -> Vec<ChartRow> {
        self.metrics()
            .filter(|(_, metric)| metric.in_table && metric.better != Better::Neither)
            .map(|(scenario, metric)| ChartRow {
                label: metric.label.to_owned(),
                better: metric.better,
                reference: metric.reference,
                ratios: self
                    .servers
                    .iter()
                    .filter(|&&server| scenario.runs_on(server))
                    .map(|&server| (server, self.ratio(metric, server)))
                    .collect(),
            })
            .collect()
    }

    /// The whole report as JSON: settings, every sample, medians, ratios and failures.
    pub fn json(&self) -> Value {
        let settings = &self.settings;
        let metrics: Vec<Value> = self
            .metrics()
            .map(|(scenario, metric)| {
                let results: serde_json::Map<String, Value> = self
                    .servers
                    .iter()
                    .filter_map(|&server| {
                        let samples = self.samples.get(&(metric.key, server))?;
                        let summary = Summary::of(samples)?;
                        let result = json!({
                            "median": summary.median,
                            "median_of": summary.count,
                            "median_is_noisy": summary.noisy,
                            "ratio": self.ratio(metric, server),
                            "samples": samples.iter().map(|s| s.value).collect::<Vec<_>>(),
                            "noisy": samples.iter().map(|s| s.noisy).collect::<Vec<_>>(),
                        });
                        Some((server.name().to_owned(), result))
                    })
                    .collect();
                json!({
                    "key": metric.key,
                    "label": metric.label,
                    "scenario": scenario.name(),
                    "better": metric.better.name(),
                    "reference": metric.reference.name(),
                    "results": results,
                })
            })
            .collect();
        json!({
            "benchmark": "load",
            "machine": self.machine.json(),
            "scenarios": self.scenarios.iter().map(|scenario| scenario.name()).collect::<Vec<_>>(),
            "settings": {
                "rounds": settings.rounds,
                "attempts": settings.attempts,
                "quiet_wait_s": settings.quiet_wait.as_secs_f64(),
                "server_cpu": cpu::SERVER_CPU,
                "client_cpu": cpu::CLIENT_CPU,
                "cpu_busy_before_run": self.busy_before_run,
                "echo": {
                    "connections": settings.echo.connections,
                    "in_flight_per_connection": settings.echo.in_flight,
                    "refill_batch": settings.echo.refill_batch,
                    "payload_bytes": settings.echo.payload_len,
                    "warmup_s": settings.echo.warmup.as_secs_f64(),
                    "window_s": settings.echo.window.as_secs_f64(),
                },
                "ping_pong": {
                    "payload_bytes": settings.ping_pong.payload_len,
                    "warmup_round_trips": settings.ping_pong.warmup_round_trips,
                    "round_trips": settings.ping_pong.round_trips,
                    "passes": settings.ping_pong.passes,
                },
                "idle": {
                    "sockets": settings.idle.sockets,
                    "warmup_sockets": settings.idle.warmup_sockets,
                    "estuary_route": ServerKind::Estuary.idle_route().path,
                    "settle_window_s": settings.idle.settle_window.as_secs_f64(),
                    "settle_limit_s": settings.idle.settle_limit.as_secs_f64(),
                },
                "handshake": {
                    "concurrency": settings.handshake.concurrency,
                    "warmup": settings.handshake.warmup,
                    "batch": settings.handshake.batch,
                    "batches": settings.handshake.batches,
                    "passes": settings.handshake.passes,
                },
                "fan_out": {
                    "subscribers": settings.fan_out.subscribers,
                    "warmup_messages": settings.fan_out.warmup_messages,
                    "messages": settings.fan_out.messages,
                },
            },
            "servers": self.servers.iter().map(|server| server.name()).collect::<Vec<_>>(),
            "metrics": metrics,
            "skipped": self.skipped.iter().map(|(server, reason)| json!({
                "server": server.name(),
                "reason": reason,
            })).collect::<Vec<_>>(),
            "failures": self.failures.iter().map(Note::json).collect::<Vec<_>>(),
            "warnings": self.warnings.iter().map(Note::json).collect::<Vec<_>>(),
        })
    }
}

/// `rows` (the first one the header) as a markdown table, columns padded to line up,
/// the first left-aligned and the others right-aligned.
fn markdown_table(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut table = String::new();
    for (index, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(column, (cell, &width))| {
                if column == 0 {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect();
        let _ = writeln!(table, "| {} |", cells.join(" | "));
        if index == 0 {
            let rule: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(column, &width)| {
                    let dashes = "-".repeat(width);
                    if column == 0 {
                        dashes
                    } else {
                        format!("{}:", &dashes[1..])
                    }
                })
                .collect();
            let _ = writeln!(table, "| {} |", rule.join(" | "));
        }
    }
    table
}

/// A table row's label: the metric's, and the reference server when it is not the usual.
fn row_label(metric: &Metric) -> String {
    // A metric without ratios names no reference.
    if metric.reference == REFERENCE || metric.better == Better::Neither {
        metric.label.to_owned()
    } else {
        format!("{} (ratio to {})", metric.label, metric.reference.name())
    }
}

/// The median of `values`, if there are any.
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        len if len % 2 == 0 => Some((sorted[middle - 1] + sorted[middle]) / 2.0),
        _ => Some(sorted[middle]),
    }
}
