//! `at://AUTHORITY/COLLECTION/RKEY`: the address of one record (the authority a DID or a
//! handle, the collection an NSID, the record key).

use atrium_api::types::string::{Nsid, RecordKey};

use crate::identity::{parse_did, parse_handle};
use crate::{Error, Result};

/// A record's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtUri {
    /// A DID or a (lower-cased) handle.
    pub authority: String,
    pub collection: String,
    pub rkey: String,
}

impl AtUri {
    pub fn parse(uri: &str) -> Result<AtUri> {
        let bad = |reason: &str| Error::InvalidAtUri { uri: uri.to_owned(), reason: reason.to_owned() };
        let rest = uri.strip_prefix("at://").ok_or_else(|| bad("it does not start with at://"))?;
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        let parts: Vec<&str> = rest.split('/').collect();
        let [authority, collection, rkey] = parts[..] else {
            return Err(bad("it needs exactly an authority, a collection and a record key"));
        };
        let authority = if authority.starts_with("did:") {
            parse_did(authority).map_err(|e| bad(&e.to_string()))?
        } else {
            parse_handle(authority).map_err(|e| bad(&e.to_string()))?
        };
        Nsid::new(collection.to_owned()).map_err(|_| bad(&format!("`{collection}` is not an NSID")))?;
        RecordKey::new(rkey.to_owned()).map_err(|_| bad(&format!("`{rkey}` is not a record key")))?;
        Ok(AtUri { authority, collection: collection.to_owned(), rkey: rkey.to_owned() })
    }
}

impl std::fmt::Display for AtUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at://{}/{}/{}", self.authority, self.collection, self.rkey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_uris_parse_and_bad_ones_say_which_part_is_wrong() {
        let u = AtUri::parse("at://Alice.Test/dev.atoll.bundle/hello").unwrap();
        assert_eq!((u.authority.as_str(), u.collection.as_str(), u.rkey.as_str()), ("alice.test", "dev.atoll.bundle", "hello"));
        assert_eq!(u.to_string(), "at://alice.test/dev.atoll.bundle/hello");
        let d = AtUri::parse("at://did:plc:abcdefghijklmnopqrstuvwx/dev.atoll.bundle/3kabc").unwrap();
        assert_eq!(d.authority, "did:plc:abcdefghijklmnopqrstuvwx");
        for (uri, says) in [
            ("https://alice.test/x/y", "at://"),
            ("at://alice.test/dev.atoll.bundle", "exactly"),
            ("at://alice.test/notannsid/x", "not an NSID"),
            ("at://alice.test/dev.atoll.bundle/..", "not a record key"),
            ("at://did:key:z6Mk/dev.atoll.bundle/x", "did:plc and did:web"),
        ] {
            let e = AtUri::parse(uri).unwrap_err().to_string();
            assert!(e.contains(says), "{uri}: {e}");
        }
    }
}
