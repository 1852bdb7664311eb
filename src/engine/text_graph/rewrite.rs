//! Rewrites a recognised fixed-L text graph to a symbolic sequence axis: the positional table and
//! each causal mask are sliced to the input's length, each shape value L becomes that length.
//! Nodes are added, inputs renamed; every other byte of the model is kept as it was.

use super::onnx::{Model, Node, INT64};
use super::pattern::{Plan, Site, IDS, MASK, PREFIX};
use super::wire::{self, put_bytes, put_int, put_packed_ints, WireError};
use std::collections::{BTreeSet, HashMap};

/// The symbolic name given to the sequence axis of both inputs.
pub(crate) const SEQUENCE_DIM: &str = "sequence";

const GRAPH: u32 = 7;
const NODE: u32 = 1;
const INPUT: u32 = 11;
const VALUE_INFO: u32 = 13;

/// Tensor names the added nodes produce.
fn name(suffix: &str) -> String {
    format!("{PREFIX}{suffix}")
}

pub(crate) fn rewrite(model: &Model<'_>, plan: &Plan) -> Result<Vec<u8>, WireError> {
    let graph = rewrite_graph(model, plan)?;
    let mut out = Vec::with_capacity(graph.len() + 1024);
    for f in &model.fields {
        if f.number == GRAPH {
            put_bytes(&mut out, GRAPH, &graph);
        } else {
            out.extend_from_slice(f.raw);
        }
    }
    Ok(out)
}

fn rewrite_graph(model: &Model<'_>, plan: &Plan) -> Result<Vec<u8>, WireError> {
    let g = &model.graph;
    let [seq_1d, seq_2d, seq_scalar, shape, zero, one, zeros_2d] = [
        "seq",
        "seq_2d",
        "seq_scalar",
        "shape",
        "zero",
        "one",
        "zeros_2d",
    ]
    .map(name);
    let mut renames: HashMap<&str, String> = HashMap::new();
    renames.insert(plan.positional.name.as_str(), name("positional"));
    for (i, m) in plan.masks.iter().enumerate() {
        renames.insert(m.name.as_str(), name(&format!("mask_{i}")));
    }
    for s in &plan.shape_values {
        let to = if s.rank == 0 { &seq_scalar } else { &seq_1d };
        renames.insert(s.name.as_str(), to.clone());
    }

    // seq = Shape(input_ids)[1:2], the input's sequence length as a 1-D tensor.
    let mut prelude = vec![
        constant(&zero, &[0]),
        constant(&one, &[1]),
        node("Shape", &[IDS], &[&shape], &[]),
        node(
            "Gather",
            &[&shape, &one],
            &[&seq_1d],
            &[int_attr("axis", 0)],
        ),
    ];
    if plan.shape_values.iter().any(|s| s.rank == 0) {
        prelude.push(node("Squeeze", &[&seq_1d, &zero], &[&seq_scalar], &[]));
    }
    prelude.push(constant(&zeros_2d, &[0, 0]));
    prelude.push(node(
        "Concat",
        &[&seq_1d, &seq_1d],
        &[&seq_2d],
        &[int_attr("axis", 0)],
    ));
    let ranks: BTreeSet<usize> = plan.masks.iter().map(|m| m.rank).collect();
    for r in ranks {
        let r = r as i64;
        prelude.push(constant(&name(&format!("axes_{r}")), &[r - 2, r - 1]));
    }
    let slice_of = |site: &Site| -> Vec<u8> {
        let to = renames
            .get(site.name.as_str())
            .map(String::as_str)
            .unwrap_or_default();
        if site.name == plan.positional.name {
            node("Slice", &[&site.name, &zero, &seq_1d, &zero], &[to], &[])
        } else {
            let axes = name(&format!("axes_{}", site.rank));
            node(
                "Slice",
                &[&site.name, &zeros_2d, &seq_2d, &axes],
                &[to],
                &[],
            )
        }
    };
    let sliced: Vec<&Site> = std::iter::once(&plan.positional)
        .chain(&plan.masks)
        .collect();
    // Initializers exist before any node: their slices go in the prelude.
    for s in sliced.iter().filter(|s| s.node.is_none()) {
        prelude.push(slice_of(s));
    }
    let replaced: Vec<usize> = plan.shape_values.iter().filter_map(|s| s.node).collect();

    let mut nodes = prelude;
    for (i, n) in g.nodes.iter().enumerate() {
        if replaced.contains(&i) {
            continue;
        }
        nodes.push(rename_inputs(n, &renames)?);
        // A Constant node's slice follows it, keeping the node list topologically sorted.
        for s in sliced.iter().filter(|s| s.node == Some(i)) {
            nodes.push(slice_of(s));
        }
    }

    let mut out = Vec::new();
    let mut nodes_written = false;
    let mut value_infos = g.value_info.iter();
    let mut inputs = g.inputs.iter();
    for f in &g.fields {
        match f.number {
            NODE => {
                if !nodes_written {
                    for n in &nodes {
                        put_bytes(&mut out, NODE, n);
                    }
                    nodes_written = true;
                }
            }
            INPUT => {
                let is_text = inputs
                    .next()
                    .is_some_and(|i| i.name == IDS || i.name == MASK);
                if is_text {
                    put_bytes(&mut out, INPUT, &symbolic_sequence(f.bytes()?)?);
                } else {
                    out.extend_from_slice(f.raw);
                }
            }
            VALUE_INFO => {
                let stale = value_infos
                    .next()
                    .is_some_and(|v| plan.stale_value_info.iter().any(|s| s == v.name));
                if !stale {
                    out.extend_from_slice(f.raw);
                }
            }
            _ => out.extend_from_slice(f.raw),
        }
    }
    Ok(out)
}

/// ValueInfoProto → type (2) → tensor_type (1) → shape (2) → dim #1: `dim_param: "sequence"`.
fn symbolic_sequence(value_info: &[u8]) -> Result<Vec<u8>, WireError> {
    wire::edit_nth(value_info, 2, 0, |ty| {
        wire::edit_nth(ty, 1, 0, |tensor| {
            wire::edit_nth(tensor, 2, 0, |shape| {
                wire::edit_nth(shape, 1, 1, |dim| {
                    let mut out = Vec::new();
                    for f in wire::fields(dim)? {
                        if f.number != 1 && f.number != 2 {
                            out.extend_from_slice(f.raw);
                        }
                    }
                    put_bytes(&mut out, 2, SEQUENCE_DIM.as_bytes());
                    Ok(out)
                })
            })
        })
    })
}

/// The node with renamed inputs (other fields byte for byte), or unchanged.
fn rename_inputs(n: &Node<'_>, renames: &HashMap<&str, String>) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::new();
    for f in &n.fields {
        if f.number == 1 {
            if let Some(to) = renames.get(f.str()?) {
                put_bytes(&mut out, 1, to.as_bytes());
                continue;
            }
        }
        out.extend_from_slice(f.raw);
    }
    Ok(out)
}

pub(super) fn node(op: &str, inputs: &[&str], outputs: &[&str], attributes: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for i in inputs {
        put_bytes(&mut out, 1, i.as_bytes());
    }
    for o in outputs {
        put_bytes(&mut out, 2, o.as_bytes());
    }
    if let Some(first) = outputs.first() {
        put_bytes(&mut out, 3, first.as_bytes());
    }
    put_bytes(&mut out, 4, op.as_bytes());
    for a in attributes {
        put_bytes(&mut out, 5, a);
    }
    out
}

/// AttributeProto of type INT (2).
pub(super) fn int_attr(name: &str, v: i64) -> Vec<u8> {
    let mut out = Vec::new();
    put_bytes(&mut out, 1, name.as_bytes());
    put_int(&mut out, 3, v);
    put_int(&mut out, 20, 2);
    out
}

/// A Constant node holding a 1-D int64 tensor.
pub(super) fn constant(output: &str, values: &[i64]) -> Vec<u8> {
    let mut tensor = Vec::new();
    put_packed_ints(&mut tensor, 1, &[values.len() as i64]);
    put_int(&mut tensor, 2, INT64);
    put_packed_ints(&mut tensor, 7, values);
    let mut attr = Vec::new();
    put_bytes(&mut attr, 1, b"value");
    put_bytes(&mut attr, 5, &tensor);
    put_int(&mut attr, 20, 4);
    node("Constant", &[], &[output], &[attr])
}
