//! `search-native [ADDR]`: the product search sample's own handler (`search::handle`),
//! served natively by the SDK's adapter over hyper, for the container comparison.

fn main() -> std::io::Result<()> {
    dabba_sdk::native::serve("search-native", search::handle)
}
