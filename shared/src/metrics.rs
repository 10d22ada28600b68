//! Metrics as CloudWatch Embedded Metric Format lines: CloudWatch turns a JSON log line with an
//! `_aws` block into metrics (and alarms) without any API call from the function.

use chrono::Utc;
use serde_json::{Map, Value, json};

pub const NAMESPACE: &str = "credbroker";

pub trait MetricsSink: Send + Sync + std::fmt::Debug {
    /// Records counts (one EMF document for all of them).
    fn counts(&self, values: &[(&'static str, u64)]);
}

/// Writes one EMF line to stdout (Lambda ships stdout to CloudWatch Logs).
#[derive(Debug, Clone)]
pub struct EmfMetrics {
    /// The `Function` dimension.
    pub function: String,
}

impl MetricsSink for EmfMetrics {
    fn counts(&self, values: &[(&'static str, u64)]) {
        println!("{}", emf_document(&self.function, values, Utc::now().timestamp_millis()));
    }
}

/// The EMF document for `values`.
pub fn emf_document(function: &str, values: &[(&'static str, u64)], timestamp_ms: i64) -> Value {
    let metrics: Vec<Value> =
        values.iter().map(|(name, _)| json!({ "Name": name, "Unit": "Count" })).collect();
    let mut doc = Map::new();
    doc.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Function"]],
                "Metrics": metrics,
            }],
        }),
    );
    doc.insert("Function".into(), json!(function));
    for (name, value) in values {
        doc.insert((*name).to_owned(), json!(value));
    }
    Value::Object(doc)
}

#[cfg(any(test, feature = "testing"))]
/// Sums counts in memory (tests).
#[derive(Debug, Default)]
pub struct MemoryMetrics(std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>);

#[cfg(any(test, feature = "testing"))]
impl MemoryMetrics {
    pub fn get(&self, name: &str) -> u64 {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(name).copied().unwrap_or(0)
    }
}

#[cfg(any(test, feature = "testing"))]
impl MetricsSink for MemoryMetrics {
    fn counts(&self, values: &[(&'static str, u64)]) {
        let mut totals = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (name, value) in values {
            *totals.entry(name).or_default() += value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_document_declares_every_value() {
        let doc = emf_document("revoker", &[("LeasesRevoked", 3), ("LeasesIrrevocable", 1)], 42);
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Namespace"], NAMESPACE);
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Metrics"][1]["Name"], "LeasesIrrevocable");
        assert_eq!(doc["LeasesRevoked"], 3);
        assert_eq!(doc["Function"], "revoker");
    }
}
