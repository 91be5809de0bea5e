//! `payment-native [ADDR]`: the payment sample's own handler (`payment::handle`), served
//! natively by the SDK's adapter over hyper. Packaged as the container image the
//! benchmarks compare dabba with; its ledger is an in-memory map.

fn main() -> std::io::Result<()> {
    dabba_sdk::native::serve("payment-native", payment::handle)
}
