//! Blob CIDs and the content-addressed cache. A blob CID Atoll accepts is ATProto's: CIDv1,
//! the `raw` codec (0x55), a sha2-256 multihash of 32 bytes. Bytes are checked against it
//! before they are used or cached, and checked again when read back from the cache.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::Digest;

use crate::{Error, Result};

const RAW: u64 = 0x55;
const SHA2_256: u64 = 0x12;

/// A blob's CID, checked to be one Atoll accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlobCid(cid::Cid);

impl BlobCid {
    /// Parses `text` (e.g. `bafkrei…`) and checks it names a raw sha2-256 CIDv1.
    pub fn parse(text: &str) -> Result<BlobCid> {
        let bad = |reason: &str| Error::UnsupportedCid { cid: text.to_owned(), reason: reason.to_owned() };
        let cid = cid::Cid::try_from(text).map_err(|e| bad(&format!("not a CID ({e})")))?;
        if cid.version() != cid::Version::V1 {
            return Err(bad("not CIDv1"));
        }
        if cid.codec() != RAW {
            return Err(bad(&format!("codec 0x{:x}, not raw (0x55)", cid.codec())));
        }
        if cid.hash().code() != SHA2_256 || cid.hash().size() != 32 {
            return Err(bad(&format!("hash 0x{:x} of {} bytes, not sha2-256", cid.hash().code(), cid.hash().size())));
        }
        Ok(BlobCid(cid))
    }

    /// The CID of `bytes`.
    pub fn of(bytes: &[u8]) -> BlobCid {
        let digest = sha2::Sha256::digest(bytes);
        let hash = multihash::Multihash::<64>::wrap(SHA2_256, &digest).expect("32 bytes fit");
        BlobCid(cid::Cid::new_v1(RAW, hash))
    }

    /// Checks that `bytes` are this blob's; `source_name` says where they came from.
    pub fn verify(&self, bytes: &[u8], source_name: &str) -> Result<()> {
        let actual = BlobCid::of(bytes);
        if actual != *self {
            return Err(Error::CidMismatch { expected: self.to_string(), actual: actual.to_string(), source_name: source_name.to_owned() });
        }
        Ok(())
    }
}

impl std::fmt::Display for BlobCid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // base32, as ATProto writes them
        write!(f, "{}", self.0)
    }
}

/// Blobs on disk, one file per CID (`DIR/CID`), written atomically and only after their bytes
/// were checked; a file whose bytes no longer match its name is refused and removed.
#[derive(Debug, Clone)]
pub struct BlobCache {
    dir: PathBuf,
}

impl BlobCache {
    /// A cache in `dir` (made if missing, mode 0700).
    pub fn open(dir: impl Into<PathBuf>) -> Result<BlobCache> {
        let dir = dir.into();
        let err = |source| Error::Cache { path: dir.display().to_string(), source };
        std::fs::create_dir_all(&dir).map_err(err)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
        }
        Ok(BlobCache { dir })
    }

    /// Where `cid`'s blob lives (whether or not it is there yet).
    pub fn path(&self, cid: &BlobCid) -> PathBuf {
        self.dir.join(cid.to_string())
    }

    /// The blob, if cached: `Ok(None)` if absent, an error (and the file removed) if its
    /// bytes do not match.
    pub fn get(&self, cid: &BlobCid) -> Result<Option<Vec<u8>>> {
        let path = self.path(cid);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::Cache { path: path.display().to_string(), source }),
        };
        if let Err(e) = cid.verify(&bytes, &format!("the cache file {}", path.display())) {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(Some(bytes))
    }

    /// Stores `bytes` under `cid` after checking them; returns the file.
    pub fn put(&self, cid: &BlobCid, bytes: &[u8]) -> Result<PathBuf> {
        cid.verify(bytes, "the bytes to cache")?;
        let path = self.path(cid);
        let err = |source| Error::Cache { path: path.display().to_string(), source };
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir).map_err(err)?;
        tmp.write_all(bytes).map_err(err)?;
        tmp.as_file().sync_all().map_err(err)?;
        tmp.persist(&path).map_err(|e| err(e.error))?;
        sync_dir(&self.dir).map_err(err)?;
        Ok(path)
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cids_are_atprotos_raw_sha256_v1() {
        // The empty blob's CID, as any IPFS/ATProto tool computes it.
        let empty = BlobCid::of(b"");
        assert_eq!(empty.to_string(), "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku");
        assert_eq!(BlobCid::parse(&empty.to_string()).unwrap(), empty);
        // dag-cbor (a record's CID), CIDv0 and garbage are refused, each saying why.
        let e = BlobCid::parse("bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm").unwrap_err();
        assert!(e.to_string().contains("codec 0x71, not raw"), "{e}");
        let e = BlobCid::parse("QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n").unwrap_err();
        assert!(e.to_string().contains("not CIDv1"), "{e}");
        assert!(BlobCid::parse("hello").unwrap_err().to_string().contains("not a CID"));
    }

    #[test]
    fn bytes_that_do_not_hash_to_the_cid_are_refused() {
        let cid = BlobCid::of(b"the code");
        cid.verify(b"the code", "test").unwrap();
        let e = cid.verify(b"other code", "https://pds.example").unwrap_err();
        assert!(matches!(e, Error::CidMismatch { .. }), "{e}");
        assert!(e.to_string().contains("https://pds.example") && e.to_string().contains(&cid.to_string()), "{e}");
    }

    #[test]
    fn a_tampered_cache_file_is_refused_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path().join("blobs")).unwrap();
        let cid = BlobCid::of(b"wasm bytes");
        assert_eq!(cache.get(&cid).unwrap(), None);
        assert!(cache.put(&cid, b"not those bytes").is_err(), "put checks too");
        let path = cache.put(&cid, b"wasm bytes").unwrap();
        assert_eq!(cache.get(&cid).unwrap().unwrap(), b"wasm bytes");
        std::fs::write(&path, b"tampered").unwrap();
        let e = cache.get(&cid).unwrap_err();
        assert!(matches!(e, Error::CidMismatch { .. }) && e.to_string().contains("cache file"), "{e}");
        assert!(!path.exists());
        assert_eq!(cache.get(&cid).unwrap(), None);
    }

    proptest! {
        #[test]
        fn a_blob_verifies_against_its_own_cid_and_no_other(a in prop::collection::vec(any::<u8>(), 0..256), b in prop::collection::vec(any::<u8>(), 0..256)) {
            let cid = BlobCid::of(&a);
            prop_assert_eq!(BlobCid::parse(&cid.to_string()).unwrap(), cid);
            prop_assert!(cid.verify(&a, "a").is_ok());
            prop_assert_eq!(cid.verify(&b, "b").is_ok(), a == b);
        }
    }
}
