//! `search-native [ADDR]`: the product search sample's own handler (`search::handle`),
//! served natively by the SDK's adapter over hyper, for the container comparison.

/// The allocator `dabba` uses: the baseline runs on the same footing.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::io::Result<()> {
    dabba_sdk::native::serve("search-native", search::handle)
}
