//! The fuzz targets' checks (`dabba_spec::fuzzing`) on the saved inputs — every seed and
//! every input that once failed (`fuzz/regressions/`, kept so the bug stays fixed) —
//! and on inputs derived from them by the mutations a fuzzer makes (bytes flipped,
//! inserted, removed; cut; spliced with another input), from a fixed random seed so a
//! failure repeats. The coverage-guided runs are `fuzz/run` (cargo fuzz).

use std::path::Path;

/// Derived inputs per target.
const MUTATIONS: usize = 3000;

/// A small xorshift generator: the same inputs on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn inputs(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    files
        .iter()
        .filter(|p| p.is_file())
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => v.insert(at, rng.next() as u8),
            2 if at < v.len() => {
                v.remove(at);
            }
            3 => v.truncate(at),
            4 => {
                // Bytes that matter to text formats: quotes, brackets, newlines, digits.
                let picks = b"\"'[]{}=\n\\/*,-.:0159@#~\xff\x00";
                v.insert(at, picks[rng.below(picks.len())]);
            }
            _ => {
                let from = rng.below(other.len() + 1);
                v.splice(at..at, other[from..].iter().copied().take(64));
            }
        }
    }
    v
}

#[test]
fn every_fuzz_target_holds_on_its_saved_and_derived_inputs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut summary = Vec::new();
    for (name, check) in dabba_spec::fuzzing::TARGETS {
        let seeds = inputs(&root.join("seeds").join(name));
        let regressions = inputs(&root.join("regressions").join(name));
        assert!(!seeds.is_empty(), "fuzz/seeds/{name} has no seed");
        for input in seeds.iter().chain(&regressions) {
            check(input);
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
        for _ in 0..MUTATIONS {
            let a = &seeds[rng.below(seeds.len())];
            let b = &seeds[rng.below(seeds.len())];
            check(&mutate(&mut rng, a, b));
        }
        summary.push(format!(
            "{name}: {} seeds, {} regressions, {MUTATIONS} derived",
            seeds.len(),
            regressions.len()
        ));
    }
    println!("{}", summary.join("\n"));
}
