//! Network shapes: who is linked to whom when a run starts.

use std::collections::BTreeSet;

use crate::rng::SimRng;

/// A network shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// Random d-regular graph (pairing model; connected by construction, see [`edges`]).
    Regular {
        /// Links per node.
        degree: u32,
    },
    /// Erdős–Rényi G(n, m) with m = n · mean_degree / 2 uniformly random edges, then connected.
    Random {
        /// Mean links per node.
        mean_degree: u32,
    },
    /// A cycle.
    Ring,
    /// A path.
    Line,
    /// Node 0 linked to every other node.
    Star,
    /// Exactly these edges.
    Edges(Vec<(u32, u32)>),
}

/// The undirected edges of `topology` over `n` nodes: no self-loops, no duplicates, each as
/// `(low, high)`, sorted. Random shapes are made connected by linking each further component
/// to the first with one extra edge (counted in the result, so flood counts stay exact).
pub fn edges(topology: &Topology, n: u32, rng: &mut SimRng) -> Vec<(u32, u32)> {
    let mut set: BTreeSet<(u32, u32)> = BTreeSet::new();
    let add = |set: &mut BTreeSet<(u32, u32)>, a: u32, b: u32| {
        if a != b && a < n && b < n {
            set.insert((a.min(b), a.max(b)));
        }
    };
    match topology {
        Topology::Ring => {
            for i in 0..n {
                add(&mut set, i, (i + 1) % n);
            }
        }
        Topology::Line => {
            for i in 1..n {
                add(&mut set, i - 1, i);
            }
        }
        Topology::Star => {
            for i in 1..n {
                add(&mut set, 0, i);
            }
        }
        Topology::Edges(list) => {
            for &(a, b) in list {
                add(&mut set, a, b);
            }
        }
        Topology::Regular { degree } => {
            // Pairing model: degree stubs per node, shuffled, paired; self-loops and repeats
            // are dropped (a few nodes end one short, which large runs tolerate).
            let mut stubs: Vec<u32> = (0..n)
                .flat_map(|i| std::iter::repeat_n(i, *degree as usize))
                .collect();
            for i in (1..stubs.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                stubs.swap(i, j);
            }
            for pair in stubs.chunks_exact(2) {
                add(&mut set, pair[0], pair[1]);
            }
        }
        Topology::Random { mean_degree } => {
            let m = u64::from(n) * u64::from(*mean_degree) / 2;
            let pairs = u64::from(n) * u64::from(n.saturating_sub(1)) / 2;
            let mut tries = 0;
            while (set.len() as u64) < m.min(pairs) && tries < 4 * m + 16 {
                tries += 1;
                let a = rng.below(u64::from(n)) as u32;
                let b = rng.below(u64::from(n)) as u32;
                add(&mut set, a, b);
            }
        }
    }
    let mut edges: Vec<(u32, u32)> = set.into_iter().collect();
    if matches!(topology, Topology::Regular { .. } | Topology::Random { .. }) {
        connect_components(n, &mut edges);
    }
    edges
}

/// Links every component to component 0 (at their lowest nodes).
fn connect_components(n: u32, edges: &mut Vec<(u32, u32)>) {
    let mut parent: Vec<u32> = (0..n).collect();
    fn find(parent: &mut [u32], mut x: u32) -> u32 {
        while parent[x as usize] != x {
            parent[x as usize] = parent[parent[x as usize] as usize];
            x = parent[x as usize];
        }
        x
    }
    for &(a, b) in edges.iter() {
        let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
        parent[ra.max(rb) as usize] = ra.min(rb);
    }
    for i in 1..n {
        let (r0, ri) = (find(&mut parent, 0), find(&mut parent, i));
        if r0 != ri {
            edges.push((0, i));
            parent[ri.max(r0) as usize] = ri.min(r0);
        }
    }
    edges.sort_unstable();
}

/// Whether the edges connect all `n` nodes.
pub fn is_connected(n: u32, edges: &[(u32, u32)]) -> bool {
    let mut adj = vec![Vec::new(); n as usize];
    for &(a, b) in edges {
        adj[a as usize].push(b);
        adj[b as usize].push(a);
    }
    let mut seen = vec![false; n as usize];
    let mut stack = vec![0u32];
    let mut count = 0;
    while let Some(x) = stack.pop() {
        if n == 0 || std::mem::replace(&mut seen[x as usize], true) {
            continue;
        }
        count += 1;
        stack.extend(adj[x as usize].iter().copied());
    }
    count == n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_shapes_have_their_edge_counts() {
        let mut r = SimRng::new(1);
        assert_eq!(edges(&Topology::Ring, 10, &mut r).len(), 10);
        assert_eq!(edges(&Topology::Line, 10, &mut r).len(), 9);
        assert_eq!(edges(&Topology::Star, 10, &mut r).len(), 9);
        assert_eq!(
            edges(&Topology::Edges(vec![(0, 1), (1, 0), (2, 2)]), 3, &mut r),
            vec![(0, 1)]
        );
    }

    #[test]
    fn random_shapes_are_connected_and_near_their_degree() {
        for seed in 0..5 {
            let mut r = SimRng::new(seed);
            let e = edges(&Topology::Regular { degree: 8 }, 1000, &mut r);
            assert!(is_connected(1000, &e));
            assert!((3900..=4000).contains(&e.len()), "{}", e.len());
            let e = edges(&Topology::Random { mean_degree: 4 }, 200, &mut r);
            assert!(is_connected(200, &e));
        }
    }
}
