//! Obtains one certificate from an ACME directory, proving the names through
//! pebble-challtestsrv's management API, and prints the chain's names and expiry: what
//! bench/acme.sh times against lego.
//! Usage: obtain DIRECTORY_URL CA_BUNDLE_PEM CHALLTESTSRV_URL NAME...

#[path = "../tests/support/mod.rs"]
mod support;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [directory, ca, challtestsrv, names @ ..] = args.as_slice() else {
        eprintln!("usage: obtain DIRECTORY_URL CA_BUNDLE_PEM CHALLTESTSRV_URL NAME...");
        std::process::exit(2);
    };
    let config = atoll_acme::AcmeConfig {
        ca_bundle_pem: Some(std::fs::read_to_string(ca).expect("read the CA bundle")),
        ..atoll_acme::AcmeConfig::new(directory.as_str())
    };
    let dns = support::ChallTestSrv::new(challtestsrv);
    match atoll_acme::obtain(&config, names, &dns).await {
        Ok(issued) => {
            let info = atoll_acme::parse_chain(&issued.chain_pem).expect("a chain");
            println!("{} until {} from {}", info.names.join(","), info.not_after, info.issuer);
        }
        Err(e) => {
            eprintln!("obtain: {e}");
            std::process::exit(1);
        }
    }
}
