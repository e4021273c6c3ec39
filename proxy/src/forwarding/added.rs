//! The forwarding fields a request carries beside its header map, and the pass over its names
//! that tells which the client sent.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use switchyard_http1::NameLengths;
use switchyard_http1::added::AddedList;

use super::{X_FORWARDED_FOR, X_FORWARDED_PROTO, X_REQUEST_ID};

/// Which of the forwarding fields a request's map may hold, from one pass over its names that
/// hashes nothing: a field known to be absent is made beside the map, never looked up.
#[derive(Debug, Clone, Copy)]
pub struct MayHold {
    pub(super) request_id: bool,
    pub(super) forwarded_for: bool,
    pub(super) forwarded_proto: bool,
    pub(super) via: bool,
}

impl MayHold {
    /// Every field may be there: each is looked up.
    pub const ALL: Self = Self {
        request_id: true,
        forwarded_for: true,
        forwarded_proto: true,
        via: true,
    };

    /// Which of the fields `headers` holds.
    pub fn of(headers: &HeaderMap) -> Self {
        const LENGTHS: NameLengths = NameLengths::of(&[
            "x-request-id",
            "x-forwarded-for",
            "x-forwarded-proto",
            "via",
        ]);
        let mut may_hold = Self {
            request_id: false,
            forwarded_for: false,
            forwarded_proto: false,
            via: false,
        };
        for name in headers.keys().filter(|name| LENGTHS.may_hold(name)) {
            may_hold.request_id |= *name == X_REQUEST_ID;
            may_hold.forwarded_for |= *name == X_FORWARDED_FOR;
            may_hold.forwarded_proto |= *name == X_FORWARDED_PROTO;
            may_hold.via |= *name == header::VIA;
        }
        may_hold
    }
}

/// The forwarding fields a request carries beside its header map: those the client sent none
/// of. The request id's value is the request's own (`RequestState::request_id`), passed in.
#[derive(Debug, Clone, Default)]
pub struct AddedFields {
    pub(super) request_id: bool,
    pub(super) forwarded_for: Option<HeaderValue>,
    pub(super) forwarded_proto: Option<&'static HeaderValue>,
    pub(super) via: Option<&'static HeaderValue>,
}

impl AddedFields {
    /// Whether nothing is kept beside the map.
    pub fn is_empty(&self) -> bool {
        !self.request_id
            && self.forwarded_for.is_none()
            && self.forwarded_proto.is_none()
            && self.via.is_none()
    }

    /// The added field named `name`, if there is one.
    pub fn get<'a>(
        &'a self,
        name: &HeaderName,
        request_id: &'a HeaderValue,
    ) -> Option<&'a HeaderValue> {
        if self.request_id && *name == X_REQUEST_ID {
            Some(request_id)
        } else if *name == X_FORWARDED_FOR {
            self.forwarded_for.as_ref()
        } else if *name == X_FORWARDED_PROTO {
            self.forwarded_proto
        } else if name == header::VIA {
            self.via
        } else {
            None
        }
    }

    /// The fields in the order they are written: after the map's, as they were appended to it.
    pub fn listed<'a>(&'a self, request_id: &'a HeaderValue) -> AddedList<'a> {
        let mut listed = AddedList::default();
        if self.request_id {
            listed.push((&X_REQUEST_ID, request_id));
        }
        if let Some(forwarded_for) = &self.forwarded_for {
            listed.push((&X_FORWARDED_FOR, forwarded_for));
        }
        if let Some(proto) = self.forwarded_proto {
            listed.push((&X_FORWARDED_PROTO, proto));
        }
        if let Some(via) = self.via {
            listed.push((&header::VIA, via));
        }
        listed
    }

    /// Puts the fields in `headers`, after its own, and keeps none beside it any more.
    pub fn move_into(&mut self, headers: &mut HeaderMap, request_id: &HeaderValue) {
        if self.is_empty() {
            return;
        }
        let added = std::mem::take(self);
        for (name, value) in added.listed(request_id).as_slice() {
            headers.append(*name, (*value).clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use http::Version;

    use super::super::{ClientAddress, add_forwarding};
    use super::*;

    fn all_in_the_map(client: IpAddr, headers: &mut HeaderMap, version: Version) {
        add_forwarding(headers, &ClientAddress::of(client), "https", version);
    }

    #[test]
    fn fields_the_client_did_not_send_are_kept_aside_and_move_in_as_they_would_have_been_added() {
        let client: IpAddr = "10.1.2.3".parse().unwrap();
        let mut with_host = HeaderMap::new();
        with_host.insert(header::HOST, HeaderValue::from_static("example.com"));
        with_host.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));

        let mut headers = with_host.clone();
        let may_hold = MayHold::of(&headers);
        let mut added = AddedFields::default();
        let request_id = added.request_id(&mut headers, may_hold);
        added.forward(
            &mut headers,
            may_hold,
            &ClientAddress::of(client),
            "https",
            Version::HTTP_11,
        );
        assert_eq!(headers, with_host, "nothing inserted in the map");
        let listed: Vec<(String, String)> = added
            .listed(&request_id)
            .as_slice()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        assert_eq!(
            listed,
            [
                (
                    "x-request-id".to_owned(),
                    request_id.to_str().unwrap().to_owned()
                ),
                ("x-forwarded-for".to_owned(), "10.1.2.3".to_owned()),
                ("x-forwarded-proto".to_owned(), "https".to_owned()),
                ("via".to_owned(), "1.1 switchyard".to_owned()),
            ]
        );
        assert_eq!(
            added.get(&X_FORWARDED_FOR, &request_id).unwrap(),
            "10.1.2.3"
        );
        assert_eq!(added.get(&X_REQUEST_ID, &request_id), Some(&request_id));
        assert_eq!(added.get(&header::HOST, &request_id), None);

        // Moved in, the map is the one the fields would have been inserted in.
        let mut expected = with_host.clone();
        expected.insert(&X_REQUEST_ID, request_id.clone());
        all_in_the_map(client, &mut expected, Version::HTTP_11);
        added.move_into(&mut headers, &request_id);
        assert!(added.is_empty());
        assert_eq!(headers, expected);
        let order = |map: &HeaderMap| map.keys().map(|k| k.to_string()).collect::<Vec<_>>();
        assert_eq!(order(&headers), order(&expected));
    }

    #[test]
    fn fields_the_client_sent_are_edited_in_the_map() {
        let client: IpAddr = "10.1.2.3".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(&X_FORWARDED_FOR, HeaderValue::from_static("192.0.2.1"));
        headers.insert(header::VIA, HeaderValue::from_static("1.0 edge"));
        headers.insert(&X_REQUEST_ID, HeaderValue::from_static("abc"));
        let may_hold = MayHold::of(&headers);
        let mut added = AddedFields::default();
        assert_eq!(added.request_id(&mut headers, may_hold), "abc");
        added.forward(
            &mut headers,
            may_hold,
            &ClientAddress::of(client),
            "http",
            Version::HTTP_11,
        );
        assert_eq!(headers[&X_FORWARDED_FOR], "192.0.2.1, 10.1.2.3");
        assert_eq!(headers[header::VIA], "1.0 edge, 1.1 switchyard");
        let request_id = HeaderValue::from_static("abc");
        let listed: Vec<&HeaderName> = added
            .listed(&request_id)
            .as_slice()
            .iter()
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(listed, [&X_FORWARDED_PROTO], "only the proto was not sent");

        // A name of the same length as one of them is not mistaken for it.
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.insert(header::AGE, HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        let may_hold = MayHold::of(&headers);
        assert!(!may_hold.request_id && !may_hold.forwarded_for);
        assert!(!may_hold.forwarded_proto && !may_hold.via);
    }
}
