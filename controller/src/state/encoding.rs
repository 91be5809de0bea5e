//! How the state's key-value buckets are written in JSON snapshots: values as base64
//! strings.

/// Buckets of byte strings, serialized with base64 values.
pub(super) mod kv_map {
    use std::collections::BTreeMap;

    use dabba_spec::kv::b64;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    type Buckets = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

    pub fn serialize<S: Serializer>(m: &Buckets, s: S) -> Result<S::Ok, S::Error> {
        let encoded: BTreeMap<&String, BTreeMap<&String, String>> = m
            .iter()
            .map(|(b, keys)| (b, keys.iter().map(|(k, v)| (k, b64::encode(v))).collect()))
            .collect();
        encoded.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Buckets, D::Error> {
        BTreeMap::<String, BTreeMap<String, String>>::deserialize(d)?
            .into_iter()
            .map(|(b, keys)| {
                let keys = keys
                    .into_iter()
                    .map(|(k, v)| Ok((k, b64::decode(&v).map_err(serde::de::Error::custom)?)))
                    .collect::<Result<_, D::Error>>()?;
                Ok((b, keys))
            })
            .collect()
    }
}
