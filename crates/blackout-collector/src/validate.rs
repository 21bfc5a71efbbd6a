//! Validation of a batch against the collector's catalog and clock: the first bad record
//! refuses the whole batch.

use blackout_model::observation::Batch;
use chrono::{DateTime, Utc};

use crate::ingest::IngestError;
use crate::targets::TargetTable;

/// The rules a batch must pass: the catalog's word on every target, and the clock.
#[derive(Debug)]
pub struct Validator {
    targets: TargetTable,
    max_age_secs: u64,
    max_future_secs: u64,
}

impl Validator {
    pub fn new(targets: TargetTable, max_age_secs: u64, max_future_secs: u64) -> Validator {
        Validator {
            targets,
            max_age_secs,
            max_future_secs,
        }
    }

    /// The catalog's targets.
    pub fn targets(&self) -> &TargetTable {
        &self.targets
    }

    /// Checks every record; the first bad one refuses the whole batch.
    pub fn validate(&self, batch: &Batch, now: DateTime<Utc>) -> Result<(), IngestError> {
        if batch.batch_id.is_empty() || batch.batch_id.len() > 128 {
            return Err(IngestError::Invalid(
                "field `batch_id`: must be 1 to 128 characters".into(),
            ));
        }
        let oldest = now - chrono::Duration::seconds(self.max_age_secs as i64);
        let newest = now + chrono::Duration::seconds(self.max_future_secs as i64);
        for (i, o) in batch.observations.iter().enumerate() {
            let bad = |msg: String| {
                IngestError::Invalid(format!("observations[{i}] (target {:?}) {msg}", o.target))
            };
            o.validate().map_err(|e| bad(e.to_string()))?;
            if o.agent != batch.agent {
                return Err(bad(format!(
                    "field `agent`: {:?} differs from the batch's agent {:?}",
                    o.agent, batch.agent
                )));
            }
            if o.measured_at < oldest || o.measured_at > newest {
                return Err(bad(format!(
                    "field `measured_at`: {} is outside the accepted window {} .. {}",
                    o.measured_at.to_rfc3339(),
                    oldest.to_rfc3339(),
                    newest.to_rfc3339()
                )));
            }
            let Some(k) = self.targets.get(&o.target) else {
                return Err(bad("field `target`: not in the collector's catalog".into()));
            };
            if k.country != o.country
                || k.asn != o.asn
                || k.signal != o.signal
                || k.control != o.control
            {
                return Err(bad(format!(
                    "fields `country`/`asn`/`signal`/`control`: the catalog says {} AS{} {} control={}",
                    k.country, k.asn, k.signal, k.control
                )));
            }
        }
        Ok(())
    }

    /// Gives every observation its target's region from the catalog (none for a target
    /// the catalog does not know) and returns how many named another one (an absent
    /// region is filled in, not counted). The region
    /// becomes an entity of the detector, a label and a line on the status page: it is
    /// the catalog's word, never the agent's (an agent's 7 MB region once took the
    /// collector to 1.2 GB). An agent with an older catalog is not refused for it.
    pub fn canonicalize(&self, batch: &mut Batch) -> u64 {
        let mut replaced = 0;
        for o in &mut batch.observations {
            let region = self.targets.get(&o.target).and_then(|k| k.region);
            if o.region.as_deref() != region {
                replaced += u64::from(o.region.is_some());
                o.region = region.map(str::to_string);
            }
        }
        replaced
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blackout_model::observation::{Observation, Signal};

    #[test]
    fn a_bgp_observation_is_refused_by_name() {
        let file = blackout_model::catalog::parse(
            "country = \"KZ\"\n\n[[tcp]]\nid = \"tcp-1\"\naddress = \"192.0.2.1:443\"\nasn = 9198\n",
            "kz.toml",
        )
        .unwrap();
        let v = Validator::new(TargetTable::new(&[file]).unwrap(), 3600, 60);
        let now = Utc::now();
        let mut o = Observation {
            agent: "a".into(),
            target: "tcp-1".into(),
            country: "KZ".into(),
            asn: 9198,
            region: None,
            signal: Signal::Tcp,
            control: false,
            measured_at: now,
            ok: true,
            phase: None,
            failure: None,
            rtt_ms: Some(10.0),
            block: None,
            timings_ms: None,
        };
        let batch = |o: &Observation| Batch {
            batch_id: "b1".into(),
            agent: "a".into(),
            observations: vec![o.clone()],
            spool: None,
        };
        assert!(v.validate(&batch(&o), now).is_ok());
        o.signal = Signal::Bgp;
        let e = v.validate(&batch(&o), now).unwrap_err().to_string();
        assert!(
            e.contains("observations[0]") && e.contains("field `signal`: bgp"),
            "{e}"
        );
    }
}
