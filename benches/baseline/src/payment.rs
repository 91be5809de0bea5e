//! `payment-native [ADDR]`: the payment sample's own handler (`payment::handle`), served
//! natively by the SDK's adapter over hyper. Packaged as the container image the
//! benchmarks compare dabba with; its ledger is an in-memory map.

/// The allocator `dabba` uses: the baseline runs on the same footing.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::io::Result<()> {
    dabba_sdk::native::serve("payment-native", payment::handle)
}
