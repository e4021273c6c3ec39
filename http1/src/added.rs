//! Fields a caller writes after a head's map without putting them in it: a proxy's own
//! (`via`, `x-forwarded-for`, a request id), which would each cost a map insertion — the name
//! hashed, the map perhaps grown — only to be written out once. They are never framing or
//! connection fields.

use http::header::{HeaderName, HeaderValue};

/// One added field.
pub type AddedField<'a> = (&'a HeaderName, &'a HeaderValue);

/// The most fields an [`AddedList`] holds.
pub const MAX_ADDED: usize = 4;

static UNUSED_NAME: HeaderName = HeaderName::from_static("x-unused");
static UNUSED_VALUE: HeaderValue = HeaderValue::from_static("");

/// Up to [`MAX_ADDED`] added fields, listed on the stack.
#[derive(Clone, Copy, Debug)]
pub struct AddedList<'a> {
    fields: [AddedField<'a>; MAX_ADDED],
    len: usize,
}

impl Default for AddedList<'_> {
    fn default() -> Self {
        Self {
            fields: [(&UNUSED_NAME, &UNUSED_VALUE); MAX_ADDED],
            len: 0,
        }
    }
}

impl<'a> AddedList<'a> {
    /// Adds `field` after the others; `false` (and nothing added) when the list is full.
    pub fn push(&mut self, field: AddedField<'a>) -> bool {
        let Some(slot) = self.fields.get_mut(self.len) else {
            return false;
        };
        *slot = field;
        self.len += 1;
        true
    }

    pub fn as_slice(&self) -> &[AddedField<'a>] {
        &self.fields[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_keeps_its_fields_in_order_up_to_its_size() {
        let names: Vec<HeaderName> = (0..=MAX_ADDED)
            .map(|i| HeaderName::try_from(format!("x-{i}")).unwrap())
            .collect();
        let value = HeaderValue::from_static("v");
        let mut list = AddedList::default();
        assert!(list.as_slice().is_empty());
        for name in &names[..MAX_ADDED] {
            assert!(list.push((name, &value)));
        }
        assert!(!list.push((&names[MAX_ADDED], &value)), "full");
        let listed: Vec<&str> = list.as_slice().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(listed, ["x-0", "x-1", "x-2", "x-3"]);
    }
}
