//! `obtain` against a real pebble (Debian `pebble`) validating DNS-01 through
//! pebble-challtestsrv: a wildcard with its base name, a single name with the account reused,
//! a wrong TXT value, a CA that forgot the account, an untrusted TLS certificate. Fails (never
//! skips) when pebble is not installed.

mod support;

use atoll_acme::{AcmeError, DataKey, Step, check_key_matches, obtain, open, parse_chain};
use support::Pebble;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn a_wildcard_and_its_base_name_are_issued_by_dns01_and_the_records_cleaned_up() {
    let pebble = Pebble::start(Some(3600));
    let dns = pebble.dns();
    let before = now();
    let issued = obtain(&pebble.config(), &names(&["*.Friends.test", "friends.test"]), &dns)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", pebble.log()));

    // Both authorizations prove themselves with one record name, two values; none is left.
    let presented = dns.presented.lock().unwrap().clone();
    assert_eq!(presented.len(), 2, "{presented:?}");
    assert!(presented.iter().all(|(fqdn, _)| fqdn == "_acme-challenge.friends.test"), "{presented:?}");
    assert_ne!(presented[0].1, presented[1].1);
    assert_eq!(dns.leftovers(), Default::default());
    assert!(issued.cleanup_errors.is_empty(), "{:?}", issued.cleanup_errors);

    let info = parse_chain(&issued.chain_pem).unwrap();
    let mut got = info.names.clone();
    got.sort();
    assert_eq!(got, names(&["*.friends.test", "friends.test"]));
    assert!(info.issuer.starts_with("Pebble Intermediate CA"), "{}", info.issuer);
    assert!(info.len >= 2, "leaf and intermediate: {}", info.len);
    // certificateValidityPeriod = 3600 s: pebble's notAfter is notBefore + 3599 s.
    assert!((info.not_after - info.not_before - 3599).abs() <= 1, "{info:?}");
    assert!(info.not_before >= before - 5 && info.not_before <= now() + 5, "{info:?}");
    check_key_matches(&issued.chain_pem, &issued.key_pem).unwrap();

    // Sealed at once; the record's key opens only with the data key and these names.
    let key_pem = issued.key_pem.clone();
    let record_names = issued.names.clone();
    assert_eq!(record_names, names(&["*.friends.test", "friends.test"]));
    let data_key = DataKey::generate().unwrap();
    let current = issued.into_current(&data_key).unwrap();
    assert_eq!((current.not_before, current.not_after), (info.not_before, info.not_after));
    assert!(!current.sealed_key.ciphertext.contains("PRIVATE KEY"));
    assert_eq!(open(&current.sealed_key, &data_key, &record_names).unwrap(), key_pem);
}

#[tokio::test]
async fn a_single_name_is_issued_and_the_stored_account_is_reused() {
    let pebble = Pebble::start(None);
    let dns = pebble.dns();
    let first = obtain(&pebble.config(), &names(&["mail.friends.test"]), &dns).await.unwrap_or_else(|e| panic!("{e}\n{}", pebble.log()));
    let info = parse_chain(&first.chain_pem).unwrap();
    assert_eq!(info.names, names(&["mail.friends.test"]));
    assert!(info.issuer.starts_with("Pebble Intermediate CA"), "{}", info.issuer);
    let creds: serde_json::Value = serde_json::from_str(&first.account_credentials).unwrap();
    assert_eq!(creds["directory"], pebble.directory_url.as_str());

    let config = atoll_acme::AcmeConfig { account: Some(first.account_credentials.clone()), ..pebble.config() };
    let second = obtain(&config, &names(&["www.friends.test"]), &dns).await.unwrap();
    assert_eq!(second.account_credentials, first.account_credentials, "the stored account is used, not a new one");
    assert_eq!(parse_chain(&second.chain_pem).unwrap().names, names(&["www.friends.test"]));
    assert_eq!(dns.leftovers(), Default::default());
}

#[tokio::test]
async fn a_wrong_txt_value_fails_naming_the_name_and_pebbles_problem() {
    let pebble = Pebble::start(None);
    let mut dns = pebble.dns();
    dns.lie = Some("not-the-key-authorization".into());
    let err = obtain(&pebble.config(), &names(&["bad.friends.test"]), &dns).await.unwrap_err();
    let AcmeError::Validation { name, problem_type, detail } = &err else { panic!("not a validation error: {err:?}") };
    assert_eq!(name, "bad.friends.test");
    assert_eq!(problem_type.as_deref(), Some("urn:ietf:params:acme:error:unauthorized"), "{err}");
    // pebble's VA: "Correct value not found for DNS challenge".
    assert!(detail.contains("Correct value not found"), "{detail}");
    let text = err.to_string();
    assert!(text.starts_with("validation of bad.friends.test failed: "), "{text}");
    // Cleaned up even though it failed.
    assert_eq!(dns.presented.lock().unwrap().len(), 1);
    assert_eq!(dns.leftovers(), Default::default());
}

#[tokio::test]
async fn a_record_that_cannot_be_published_fails_naming_it_and_the_others_are_cleaned_up() {
    let pebble = Pebble::start(None);
    let mut dns = pebble.dns();
    dns.refuse = Some(("b.friends.test".into(), "the zone is read-only".into()));
    let err = obtain(&pebble.config(), &names(&["a.friends.test", "b.friends.test"]), &dns).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "could not publish the DNS-01 record _acme-challenge.b.friends.test for b.friends.test: the zone is read-only"
    );
    assert_eq!(dns.presented.lock().unwrap().len(), 2);
    assert_eq!(dns.leftovers(), Default::default());
}

#[tokio::test]
async fn an_account_the_ca_forgot_is_replaced_by_a_new_one() {
    let mut pebble = Pebble::start(None);
    let dns = pebble.dns();
    let first = obtain(&pebble.config(), &names(&["a.friends.test"]), &dns).await.unwrap();
    pebble.restart();
    let config = atoll_acme::AcmeConfig { account: Some(first.account_credentials.clone()), ..pebble.config() };
    let second = obtain(&config, &names(&["a.friends.test"]), &dns).await.unwrap_or_else(|e| panic!("{e}\n{}", pebble.log()));
    assert_ne!(second.account_credentials, first.account_credentials);
    assert_eq!(parse_chain(&second.chain_pem).unwrap().names, names(&["a.friends.test"]));
}

#[tokio::test]
async fn a_directory_whose_tls_certificate_is_not_trusted_is_refused_in_words() {
    let pebble = Pebble::start(None);
    let dns = pebble.dns();
    let config = atoll_acme::AcmeConfig { ca_bundle_pem: None, ..pebble.config() };
    let err = obtain(&config, &names(&["a.friends.test"]), &dns).await.unwrap_err();
    let AcmeError::Acme { step: Step::Account, .. } = &err else { panic!("{err:?}") };
    let text = err.to_string();
    assert!(text.contains(&pebble.directory_url) && text.contains("UnknownIssuer") && text.contains("CA bundle"), "{text}");
    assert!(dns.presented.lock().unwrap().is_empty());

    let bad = atoll_acme::AcmeConfig { ca_bundle_pem: Some("not a pem".into()), ..pebble.config() };
    let err = obtain(&bad, &names(&["a.friends.test"]), &dns).await.unwrap_err();
    assert_eq!(err.to_string(), "the CA bundle for the ACME directory is unusable: it holds no PEM CERTIFICATE block");
    let err = obtain(&pebble.config(), &names(&["a.*.test"]), &dns).await.unwrap_err();
    assert!(err.to_string().contains("\"a.*.test\" is not a DNS name"), "{err}");
}

#[tokio::test]
async fn a_short_lived_certificate_is_recorded_valid_and_due_at_two_thirds_of_its_life() {
    // certificateValidityPeriod: 30 s (what the island's renewal test can use).
    let pebble = Pebble::start(Some(30));
    let dns = pebble.dns();
    let mut record = atoll_acme::CertificateRecord::pending(names(&["short.friends.test"]), now());
    assert!(record.is_due(now()));
    record.start_attempt();
    let issued = obtain(&pebble.config(), &record.names, &dns).await.unwrap();
    let obtained = now();
    let data_key = DataKey::generate().unwrap();
    record.succeeded(issued.into_current(&data_key).unwrap(), obtained);
    let current = record.current.as_ref().unwrap();
    assert_eq!(record.state, atoll_acme::CertState::Valid);
    assert!((current.not_after - current.not_before - 29).abs() <= 1, "{current:?}");
    let due = record.next_attempt_at;
    assert!(due > obtained && due < current.not_after, "due {due}, obtained {obtained}, {current:?}");
    assert!((due - (obtained + (current.not_after - obtained) * 2 / 3)).abs() <= 1, "due {due}, obtained {obtained}, {current:?}");
    assert!(record.serves_at(obtained) && !record.is_due(obtained));
    let key = record.open_key(&data_key).unwrap().expect("a key is held");
    check_key_matches(&current.chain_pem, &key).unwrap();
    assert!(record.open_key(&DataKey::generate().unwrap()).is_err());
}
