//! A Prometheus text scrape, read back: what a server's `/metrics` said at one moment.

use std::net::SocketAddr;

use super::raw_request;

/// The sample of Prometheus text `scrape` whose line is `series` followed by its value:
/// for a scrape of a server's `/metrics`, or of a recorder in the test's own process.
pub fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

/// One scrape of a `/metrics` endpoint.
#[derive(Debug, Clone)]
pub struct Scrape(pub String);

impl Scrape {
    /// GETs `path` on `addr`.
    pub async fn get(addr: SocketAddr, path: &str) -> Scrape {
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        let response = raw_request(addr, request).await;
        assert_eq!(response.status, 200, "GET {path}: {}", response.body);
        Scrape(response.body)
    }

    /// The sample whose line is `series` (a name and its labels, as the exporter writes
    /// them) followed by its value.
    pub fn sample(&self, series: &str) -> Option<f64> {
        sample(&self.0, series)
    }

    /// [`Scrape::sample`], with a counter or gauge never touched counted as zero.
    pub fn value(&self, series: &str) -> f64 {
        self.sample(series).unwrap_or(0.0)
    }

    /// Every sample of metric `name`, with its label text (`code="1000",reason="remote"`,
    /// or "" without labels).
    pub fn samples(&self, name: &str) -> Vec<(String, f64)> {
        self.0
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let labels = match series.strip_prefix(name)? {
                    "" => "",
                    rest => rest.strip_prefix('{')?.strip_suffix('}')?,
                };
                Some((labels.to_owned(), value.parse().ok()?))
            })
            .collect()
    }
}
