//! Generated code adds no warnings to a crate that denies them, documents everything it makes
//! public, and leaves no dead code behind in a process that uses only one side.

#![deny(warnings, missing_docs, unreachable_pub)]

mod private {
    use rpc::service;

    /// A service only this process knows: the client half stays unused.
    #[service]
    pub(crate) trait Internal {
        /// Echoes.
        async fn echo(&self, text: String) -> String;
        /// Counts.
        fn count(&self) -> u64;
        /// Seven arguments and `&self`: one more than clippy's default threshold.
        async fn many(&self, a: u8, b: u8, c: u8, d: u8, e: u8, f: u8, g: u8) -> Result<u8, String>;
    }

    pub(crate) struct Impl;

    impl Internal for Impl {
        async fn echo(&self, text: String) -> String {
            text
        }
        fn count(&self) -> u64 {
            0
        }
        async fn many(&self, a: u8, _: u8, _: u8, _: u8, _: u8, _: u8, _: u8) -> Result<u8, String> {
            Ok(a)
        }
    }
}

fn main() {
    use private::Internal;
    let server = private::Impl.into_service();
    assert_eq!(rpc::Service::descriptor(&server).name, "Internal");
}
