//! The `batch` import: the changes a hook made, in one host call instead of one each (the WIT's
//! `batch` interface describes the encoding). The bytes come from the plugin, so every length is
//! checked, nothing here panics, and an error names the change that could not be applied.

use std::borrow::Cow;

use super::bindings::switchyard::plugin::batch;
use super::host::{HeaderChange, HostState, MetricHandle, MetricKind};
use super::metric_imports::{MetricLookup, update_borrowed};

/// The tag of each change; the SDK writes the same numbers.
const SET_REQUEST_HEADER: u8 = 1;
const ADD_REQUEST_HEADER: u8 = 2;
const REMOVE_REQUEST_HEADER: u8 = 3;
const ADD_CLIENT_RESPONSE_HEADER: u8 = 4;
const SET_CONTEXT: u8 = 5;
const METRIC: u8 = 6;

/// Labels read in place; a metric with more is read into a vector.
const INLINE_LABELS: usize = 8;

impl batch::Host for HostState {
    fn apply(&mut self, changes: Vec<u8>) -> Result<(), String> {
        let mut reader = Reader { rest: &changes };
        let mut index = 0usize;
        while !reader.rest.is_empty() {
            self.apply_one(&mut reader)
                .map_err(|e| format!("change {index} of the batch: {e}"))?;
            index += 1;
        }
        Ok(())
    }
}

impl HostState {
    fn apply_one(&mut self, reader: &mut Reader<'_>) -> Result<(), String> {
        match reader.u8()? {
            tag @ (SET_REQUEST_HEADER | ADD_REQUEST_HEADER) => {
                let change = if tag == SET_REQUEST_HEADER {
                    HeaderChange::Set
                } else {
                    HeaderChange::Add
                };
                let name = reader.str()?;
                let value = reader.bytes()?;
                self.change_request_header(change, name, bytes::Bytes::copy_from_slice(value))
            }
            REMOVE_REQUEST_HEADER => {
                let name = reader.str()?;
                self.remove_request_header(name);
                Ok(())
            }
            ADD_CLIENT_RESPONSE_HEADER => {
                let name = reader.str()?;
                let value = reader.bytes()?;
                self.add_client_response_header(name, bytes::Bytes::copy_from_slice(value))
            }
            SET_CONTEXT => {
                let key = reader.str()?;
                let value = reader.bytes()?;
                super::bindings::switchyard::plugin::context::Host::set(
                    self,
                    key.to_owned(),
                    value.to_vec(),
                );
                Ok(())
            }
            METRIC => self.apply_metric(reader),
            other => Err(format!("unknown change tag {other}")),
        }
    }

    fn apply_metric(&mut self, reader: &mut Reader<'_>) -> Result<(), String> {
        let kind = match reader.u8()? {
            0 => MetricKind::Counter,
            1 => MetricKind::Gauge,
            2 => MetricKind::Histogram,
            other => return Err(format!("unknown metric kind {other}")),
        };
        let name = reader.str()?;
        let count = usize::from(reader.u8()?);
        let mut inline: [(Cow<'_, str>, Cow<'_, str>); INLINE_LABELS] =
            std::array::from_fn(|_| (Cow::Borrowed(""), Cow::Borrowed("")));
        let mut spilled = Vec::new();
        for i in 0..count {
            let pair = (Cow::Borrowed(reader.str()?), Cow::Borrowed(reader.str()?));
            match inline.get_mut(i) {
                Some(slot) => *slot = pair,
                None => spilled.push(pair),
            }
        }
        let labels = if count > INLINE_LABELS {
            spilled.splice(0..0, inline);
            &spilled[..]
        } else {
            &inline[..count]
        };
        let raw = reader.u64()?;
        let lookup = MetricLookup::new(kind, name, labels);
        update_borrowed(self, &lookup, |handle| match handle {
            MetricHandle::Counter(c) => c.increment(raw),
            MetricHandle::Gauge(g) => g.set(f64::from_bits(raw)),
            MetricHandle::Histogram(h) => h.record(f64::from_bits(raw)),
        });
        Ok(())
    }
}

/// Reads the encoding's fields off the front of the batch.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.rest.len() < n {
            return Err(format!(
                "ends early: {n} bytes wanted, {} left",
                self.rest.len()
            ));
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut word = [0u8; 8];
        word.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(word))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn str(&mut self) -> Result<&'a str, String> {
        std::str::from_utf8(self.bytes()?).map_err(|_| "a string is not UTF-8".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s);
    }

    #[test]
    fn the_reader_takes_fields_in_order_and_refuses_what_runs_past_the_end() {
        let mut bytes = vec![7u8];
        string(&mut bytes, b"x-name");
        bytes.extend_from_slice(&42u64.to_le_bytes());
        let mut reader = Reader { rest: &bytes };
        assert_eq!(reader.u8(), Ok(7));
        assert_eq!(reader.str(), Ok("x-name"));
        assert_eq!(reader.u64(), Ok(42));
        assert!(reader.rest.is_empty());

        // A length that claims more than is there, and a string that is not UTF-8.
        let mut short = Vec::new();
        short.extend_from_slice(&100u32.to_le_bytes());
        short.extend_from_slice(b"abc");
        assert!(
            Reader { rest: &short }
                .str()
                .unwrap_err()
                .contains("ends early")
        );
        let mut bad = Vec::new();
        string(&mut bad, &[0xff, 0xfe]);
        assert!(Reader { rest: &bad }.str().unwrap_err().contains("UTF-8"));
        assert!(Reader { rest: &[] }.u8().is_err());
        assert!(Reader { rest: &[1, 2, 3] }.u32().is_err());
    }
}
