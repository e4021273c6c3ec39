//! One request as plugins see it: what the proxy lends an instance for each hook call.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};

use crate::upstream::{Cluster, Clusters};

/// What every request on one listener shares, held through one reference (one atomic step to
/// take and one to drop a request).
#[derive(Debug)]
pub struct ListenerScope {
    /// The listener's name.
    pub listener: Arc<str>,
    /// The clusters of the config the listener was built from: destinations and callouts
    /// resolve here, so a reload mid-request never mixes two configs.
    pub clusters: Arc<Clusters>,
}

/// One request as plugins see it. Owned by the proxy; lent to an instance for each hook call.
#[derive(Debug)]
pub struct RequestState {
    /// The request head. Its map may lack the forwarding fields this proxy adds (`added`): read
    /// fields by name with [`RequestState::request_header`], and change the map or read it whole
    /// through [`RequestState::request_headers`].
    pub head: http::request::Parts,
    /// The forwarding fields the client sent none of, kept beside the map until something reads
    /// it whole or changes it (see `forwarding`).
    pub added: crate::forwarding::AddedFields,
    /// The attempt's response head in on-upstream-response, the client's in on-response.
    pub response: Option<http::response::Parts>,
    /// The listener it came on, and the clusters of the config this request started on.
    pub scope: Arc<ListenerScope>,
    pub peer: SocketAddr,
    pub request_id: HeaderValue,
    pub attempt: u32,
    pub destination: Option<Arc<Cluster>>,
    /// The TLS session the request came on (SNI, verified client identity); none on plain
    /// listeners.
    pub tls: Option<Arc<crate::tls::TlsSession>>,
    pub timeout: Option<Duration>,
    pub per_try_timeout: Option<Duration>,
    /// What plugins pass each other (`context.set`), by key, and the route one named.
    pub context: super::context::RequestContext,
    /// Set when the last `set-destination` named no cluster: the request then gets a 500.
    pub bad_destination: Option<String>,
    /// How many plugins of the chain saw on-request (all, unless one answered early); only
    /// those see the response.
    pub plugins_reached: usize,
    /// The chain this request runs when its route changed it (`[[listener.route]]`): the
    /// listener's plugins less those skipped, then those added. `None`: the listener's chain.
    pub routed_chain: Option<Arc<[Arc<super::Plugin>]>>,
    /// What telemetry reports when the request is done.
    pub exchange: crate::telemetry::Exchange,
    /// Headers plugins added for the client's response (`add-response-header`), appended to
    /// whatever response goes out.
    pub response_headers_to_add: Vec<(http::HeaderName, HeaderValue)>,
    /// The request's contexts in the proxy-wasm filters it went through: which instance holds
    /// each.
    pub filter_contexts: Vec<Arc<super::proxy_wasm::FilterContext>>,
    /// How an HTTP/1.1 upstream's response fields come back: passed as they came when nothing
    /// reads them before the client's HTTP/1.1 engine writes them (see
    /// `ListenerProxy::response_fields`).
    pub response_fields: crate::upstream::ResponseFields,
    /// This proxy's own response fields, when the upstream's are passed (see `forwarding`).
    pub response_added: crate::forwarding::ResponseAdded,
}

impl RequestState {
    /// The first value of the request's `name` field, in the map or beside it.
    pub fn request_header(&self, name: &HeaderName) -> Option<&HeaderValue> {
        self.head
            .headers
            .get(name)
            .or_else(|| self.added.get(name, &self.request_id))
    }

    /// Every value of the request's `name` field, in the map or beside it.
    pub fn request_header_all(&self, name: &HeaderName) -> Vec<HeaderValue> {
        let in_map: Vec<HeaderValue> = self.head.headers.get_all(name).iter().cloned().collect();
        if !in_map.is_empty() {
            return in_map;
        }
        self.added
            .get(name, &self.request_id)
            .cloned()
            .into_iter()
            .collect()
    }

    /// The request's whole header map, the fields kept beside it put in first: for whatever
    /// lists the fields or reads them all.
    pub fn request_headers(&mut self) -> &mut http::HeaderMap {
        self.added
            .move_into(&mut self.head.headers, &self.request_id);
        &mut self.head.headers
    }

    /// The request's header map, to change its `name` fields: the fields kept beside it are put
    /// in first only when one has that name (a change to other names leaves them where they
    /// are, written after the map's).
    pub fn request_headers_for(&mut self, name: &HeaderName) -> &mut http::HeaderMap {
        if self.added.get(name, &self.request_id).is_some() {
            self.added
                .move_into(&mut self.head.headers, &self.request_id);
        }
        &mut self.head.headers
    }

    /// What telemetry reports when the request is done.
    pub fn finished(&self) -> crate::telemetry::exchange::Finished<'_> {
        crate::telemetry::exchange::Finished {
            exchange: &self.exchange,
            peer: self.peer,
            request_id: &self.request_id,
            attempts: self.attempt,
            route: self.context.route(),
            identity: self.tls.as_ref().and_then(|t| t.identity.as_ref()),
        }
    }

    /// A copy for hooks that run beside the request rather than in its flow (body chunks): the
    /// heads, identity, destination and context as they are now. What those hooks change stays
    /// in the copy; its telemetry is never reported.
    pub fn view(&self) -> Box<RequestState> {
        Box::new(RequestState {
            head: crate::headers::copy_request(&self.head, ()).into_parts().0,
            added: self.added.clone(),
            response: self
                .response
                .as_ref()
                .map(crate::headers::copy_response_head),
            scope: Arc::clone(&self.scope),
            peer: self.peer,
            request_id: self.request_id.clone(),
            attempt: self.attempt,
            destination: self.destination.clone(),
            tls: self.tls.clone(),
            timeout: self.timeout,
            per_try_timeout: self.per_try_timeout,
            context: self.context.clone(),
            bad_destination: None,
            plugins_reached: self.plugins_reached,
            routed_chain: self.routed_chain.clone(),
            exchange: crate::telemetry::Exchange::new(
                self.exchange.method.clone(),
                self.exchange.version,
            ),
            response_headers_to_add: Vec::new(),
            response_fields: crate::upstream::ResponseFields::Map,
            response_added: Default::default(),
            filter_contexts: self.filter_contexts.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    /// The request state is boxed once a request. Up to about 1 KiB, glibc's allocator serves
    /// the box from its per-thread cache; a larger one takes its slow path (~400 instructions a
    /// request more, measured when an inline vector grew the state from 1,000 to 1,064 bytes).
    #[test]
    #[cfg(all(target_env = "gnu", target_pointer_width = "64"))]
    fn the_request_state_stays_in_the_allocators_thread_cache() {
        let size = std::mem::size_of::<super::RequestState>();
        assert!(size <= 1024, "RequestState is {size} bytes");
    }
}
