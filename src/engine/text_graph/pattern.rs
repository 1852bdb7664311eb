//! Recognises a CLIP text tower whose sequence length L is fixed in the graph, and finds every
//! place L is baked in. Anything not positively recognised is refused: the graph is then served
//! unchanged at its fixed length.

use super::onnx::{Dim, Model, Node, Tensor, INT64};
use super::wire::WireError;
use std::collections::{HashMap, HashSet};

/// Why a graph keeps its fixed sequence length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    #[error("unreadable ONNX protobuf: {0}")]
    Wire(#[from] WireError),
    #[error("{0}")]
    Pattern(String),
}

fn refuse<T>(message: impl Into<String>) -> Result<T, Refused> {
    Err(Refused::Pattern(message.into()))
}

/// Prefix of every tensor name the rewrite adds.
pub(crate) const PREFIX: &str = "text_length/";
pub(crate) const IDS: &str = "input_ids";
pub(crate) const MASK: &str = "attention_mask";

/// A tensor that holds L: an initializer, or the output of the Constant node `node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Site {
    pub name: String,
    pub node: Option<usize>,
    pub rank: usize,
}

/// Everything the rewrite changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The fixed sequence length.
    pub length: i64,
    /// The `[L, D]` positional embedding table.
    pub positional: Site,
    /// The causal `[.., L, L]` attention masks.
    pub masks: Vec<Site>,
    /// Integer constants equal to L that only shape a Reshape or Expand (rank 0 or 1).
    pub shape_values: Vec<Site>,
    /// value_info entries that state L (optional hints, dropped).
    pub stale_value_info: Vec<String>,
}

/// The lowest default-domain operator set the added nodes need (Squeeze/Unsqueeze axes as inputs).
const MIN_OPSET: i64 = 13;
/// Above the diagonal a causal mask must be -inf or at most this (the float16 masks use -65504).
const MASKED: f32 = -1.0e4;

struct Index<'m> {
    model: &'m Model<'m>,
    producer: HashMap<&'m str, usize>,
    consumers: HashMap<&'m str, Vec<(usize, usize)>>,
    outputs: HashSet<&'m str>,
}

impl<'m> Index<'m> {
    fn new(model: &'m Model<'m>) -> Self {
        let mut producer = HashMap::new();
        let mut consumers: HashMap<&str, Vec<(usize, usize)>> = HashMap::new();
        for (i, n) in model.graph.nodes.iter().enumerate() {
            for o in &n.outputs {
                producer.insert(*o, i);
            }
            for (slot, input) in n.inputs.iter().enumerate() {
                consumers.entry(*input).or_default().push((i, slot));
            }
        }
        let outputs = model.graph.outputs.iter().map(|o| o.name).collect();
        Index {
            model,
            producer,
            consumers,
            outputs,
        }
    }

    fn node(&self, i: usize) -> &'m Node<'m> {
        &self.model.graph.nodes[i]
    }

    fn consumers(&self, name: &str) -> &[(usize, usize)] {
        self.consumers.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    fn produced_by(&self, name: &str) -> Option<&'m Node<'m>> {
        self.producer.get(name).map(|i| self.node(*i))
    }

    /// Follows `name` back through Cast nodes.
    fn through_casts(&self, mut name: &'m str) -> &'m str {
        for _ in 0..16 {
            match self.produced_by(name) {
                Some(n) if n.op_type == "Cast" && !n.inputs.is_empty() => name = n.inputs[0],
                _ => break,
            }
        }
        name
    }
}

/// Checks `model` strictly and lists what the rewrite must change.
pub(crate) fn analyse(model: &Model<'_>) -> Result<Plan, Refused> {
    if model.has_functions_or_training {
        return refuse("the model has local functions or training information");
    }
    if model.fields.iter().filter(|f| f.number == 7).count() != 1 {
        return refuse("the model does not have exactly one graph");
    }
    match model
        .opsets
        .iter()
        .find(|(d, _)| d.is_empty() || *d == "ai.onnx")
    {
        Some((_, v)) if *v >= MIN_OPSET => {}
        Some((_, v)) => return refuse(format!("operator set {v} is older than {MIN_OPSET}")),
        None => return refuse("no default operator set"),
    }
    let g = &model.graph;
    if g.has_sparse_initializers {
        return refuse("the graph has sparse initializers");
    }
    let length = fixed_length(model)?;
    let index = Index::new(model);
    check_nodes(model, length)?;
    if let Some(o) = g.outputs.iter().find(|o| o.has_dim(length)) {
        return refuse(format!(
            "output `{}` has the sequence length in its shape",
            o.name
        ));
    }
    let taken = g
        .nodes
        .iter()
        .flat_map(|n| n.inputs.iter().chain(&n.outputs))
        .chain(g.initializers.iter().map(|t| &t.name))
        .chain(g.inputs.iter().map(|i| &i.name))
        .any(|name| name.starts_with(PREFIX));
    if taken {
        return refuse(format!("the graph already has tensors named `{PREFIX}…`"));
    }

    let mut positional = Vec::new();
    let mut masks = Vec::new();
    let mut shape_values = Vec::new();
    for (site, tensor) in tensors(model) {
        if index.outputs.contains(site.name.as_str()) {
            if tensor.dims.contains(&length) {
                return refuse(format!("`{}` is a graph output", site.name));
            }
            continue;
        }
        classify(
            site,
            tensor,
            length,
            &mut positional,
            &mut masks,
            &mut shape_values,
        )?;
    }
    let positional = match positional.len() {
        1 => positional.remove(0),
        0 => return refuse("no [L, D] positional embedding table"),
        n => return refuse(format!("{n} candidate [L, D] positional tables")),
    };
    check_positional(&index, &positional)?;
    if masks.is_empty() {
        return refuse("no causal attention mask (not a causal text tower)");
    }
    check_masks(&index, &masks)?;
    for s in &shape_values {
        check_shape_value(&index, s)?;
    }
    check_pooling(&index)?;
    let stale_value_info = g
        .value_info
        .iter()
        .filter(|v| v.has_dim(length))
        .map(|v| v.name.to_string())
        .collect();
    Ok(Plan {
        length,
        positional,
        masks,
        shape_values,
        stale_value_info,
    })
}

/// `input_ids` and `attention_mask` are the only inputs, both `[batch, L]` with the same fixed L.
fn fixed_length(model: &Model<'_>) -> Result<i64, Refused> {
    let g = &model.graph;
    let initializers: HashSet<&str> = g.initializers.iter().map(|t| t.name).collect();
    let mut names: Vec<&str> = g
        .inputs
        .iter()
        .map(|i| i.name)
        .filter(|n| !initializers.contains(n))
        .collect();
    names.sort_unstable();
    if names != [MASK, IDS] {
        return refuse(format!(
            "inputs are {names:?}, not input_ids and attention_mask"
        ));
    }
    let mut lengths = Vec::new();
    for input in g.inputs.iter().filter(|i| i.name == IDS || i.name == MASK) {
        match input.dims.as_deref() {
            Some([_, Dim::Value(l)]) if *l >= 2 => lengths.push(*l),
            _ => {
                return refuse(format!(
                    "input `{}` is not [batch, L] with a fixed L",
                    input.name
                ))
            }
        }
    }
    match lengths.as_slice() {
        [a, b] if a == b => Ok(*a),
        _ => refuse("input_ids and attention_mask disagree on L"),
    }
}

/// Default-domain nodes only, no control flow or nested graphs, no attribute equal to L.
fn check_nodes(model: &Model<'_>, length: i64) -> Result<(), Refused> {
    for n in &model.graph.nodes {
        let name = n.outputs.first().copied().unwrap_or(n.op_type);
        if !n.is_default_domain() {
            return refuse(format!("node `{name}` is in domain `{}`", n.domain));
        }
        if matches!(n.op_type, "If" | "Loop" | "Scan") || n.attributes.iter().any(|a| a.nested) {
            return refuse(format!("node `{name}` ({}) has a subgraph", n.op_type));
        }
        for a in &n.attributes {
            if a.int == Some(length) || a.ints.contains(&length) {
                return refuse(format!(
                    "attribute `{}` of `{name}` is the sequence length",
                    a.name
                ));
            }
            if let Some(t) = a.tensor.as_ref().filter(|_| n.op_type != "Constant") {
                let holds_l = t.int_values().is_some_and(|v| v.contains(&length));
                if t.dims.contains(&length) || holds_l {
                    return refuse(format!(
                        "a tensor attribute of `{name}` ({}) holds the sequence length",
                        n.op_type
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Every initializer and Constant-node value, with where it lives.
fn tensors<'m>(model: &'m Model<'m>) -> Vec<(Site, &'m Tensor<'m>)> {
    let g = &model.graph;
    let mut out: Vec<(Site, &Tensor)> = g
        .initializers
        .iter()
        .map(|t| {
            let site = Site {
                name: t.name.to_string(),
                node: None,
                rank: t.dims.len(),
            };
            (site, t)
        })
        .collect();
    for (i, n) in g.nodes.iter().enumerate() {
        if n.op_type != "Constant" {
            continue;
        }
        if let (Some(t), Some(out_name)) = (
            n.attribute("value").and_then(|a| a.tensor.as_ref()),
            n.outputs.first(),
        ) {
            let site = Site {
                name: out_name.to_string(),
                node: Some(i),
                rank: t.dims.len(),
            };
            out.push((site, t));
        }
    }
    out
}

/// Sorts a tensor into the one shape L may take in it, or refuses.
fn classify(
    site: Site,
    t: &Tensor<'_>,
    length: i64,
    positional: &mut Vec<Site>,
    masks: &mut Vec<Site>,
    shape_values: &mut Vec<Site>,
) -> Result<(), Refused> {
    if t.external {
        return refuse(format!(
            "tensor `{}` is stored outside the model",
            site.name
        ));
    }
    let dims = &t.dims;
    if dims.contains(&length) {
        if t.is_float() && dims.len() == 2 && dims[0] == length && dims[1] > 0 {
            if dims[1] == length {
                return refuse(format!(
                    "`{}` is [L, L]: the width equals the sequence length",
                    site.name
                ));
            }
            positional.push(site);
            return Ok(());
        }
        let r = dims.len();
        let square = r >= 2 && dims[r - 2] == length && dims[r - 1] == length;
        if t.is_float() && (2..=4).contains(&r) && square && dims[..r - 2].iter().all(|d| *d == 1) {
            let values = t
                .float_values()
                .ok_or_else(|| Refused::Pattern(format!("unreadable mask `{}`", site.name)))?;
            if !is_causal(&values, length as usize) {
                return refuse(format!("`{}` is [L, L] but not a causal mask", site.name));
            }
            masks.push(site);
            return Ok(());
        }
        return refuse(format!(
            "tensor `{}` {dims:?} has the sequence length in an unrecognised place",
            site.name
        ));
    }
    if t.is_int() {
        let values = t
            .int_values()
            .ok_or_else(|| Refused::Pattern(format!("unreadable tensor `{}`", site.name)))?;
        if values.contains(&length) {
            if t.data_type == INT64 && dims.len() <= 1 && values.len() == 1 {
                shape_values.push(site);
                return Ok(());
            }
            return refuse(format!(
                "integer tensor `{}` {values:?} holds the sequence length",
                site.name
            ));
        }
    }
    Ok(())
}

/// 0 on and below the diagonal, -inf or very negative above it.
pub(crate) fn is_causal(values: &[f32], l: usize) -> bool {
    values.len() == l * l
        && values.iter().enumerate().all(|(k, v)| {
            let (i, j) = (k / l, k % l);
            if j <= i {
                *v == 0.0
            } else {
                *v <= MASKED
            }
        })
}

/// The table is added, once, to the token embeddings gathered with `input_ids`.
fn check_positional(index: &Index<'_>, site: &Site) -> Result<(), Refused> {
    let uses = index.consumers(&site.name);
    let [(node, slot)] = uses else {
        return refuse(format!(
            "positional table `{}` has {} uses, expected one",
            site.name,
            uses.len()
        ));
    };
    let add = index.node(*node);
    if add.op_type != "Add" || add.inputs.len() != 2 {
        return refuse(format!("positional table feeds {}, not Add", add.op_type));
    }
    let other = index.through_casts(add.inputs[1 - slot]);
    match index.produced_by(other) {
        Some(g)
            if g.op_type == "Gather"
                && g.inputs.len() == 2
                && index.through_casts(g.inputs[1]) == IDS
                && g.attribute("axis").and_then(|a| a.int).unwrap_or(0) == 0 =>
        {
            Ok(())
        }
        _ => refuse("the positional table is not added to the token embeddings of input_ids"),
    }
}

/// Each mask is added to attention scores that go straight into a Softmax, and every Softmax
/// in the graph is masked that way.
fn check_masks(index: &Index<'_>, masks: &[Site]) -> Result<(), Refused> {
    let mut masked = HashSet::new();
    for m in masks {
        let uses = index.consumers(&m.name);
        if uses.is_empty() {
            return refuse(format!("mask `{}` is unused", m.name));
        }
        for (node, slot) in uses {
            let add = index.node(*node);
            if add.op_type != "Add" || add.inputs.len() != 2 || add.outputs.len() != 1 {
                return refuse(format!("mask `{}` feeds {}, not Add", m.name, add.op_type));
            }
            let scores = index.produced_by(add.inputs[1 - slot]).map(|n| n.op_type);
            if !matches!(scores, Some("MatMul" | "Mul" | "Div")) {
                return refuse(format!(
                    "mask `{}` is not added to attention scores",
                    m.name
                ));
            }
            let out = add.outputs[0];
            let softmaxes = index.consumers(out);
            let all_softmax = !softmaxes.is_empty()
                && softmaxes.iter().all(|(n, _)| {
                    let s = index.node(*n);
                    s.op_type == "Softmax"
                        && s.attribute("axis").and_then(|a| a.int).unwrap_or(-1) == -1
                });
            if !all_softmax || index.outputs.contains(out) {
                return refuse(format!("masked scores `{out}` do not go into a Softmax"));
            }
            masked.insert(out);
        }
    }
    for n in &index.model.graph.nodes {
        if n.op_type == "Softmax" && !n.inputs.first().is_some_and(|i| masked.contains(i)) {
            return refuse("a Softmax without the causal mask (attention over padding)");
        }
    }
    Ok(())
}

/// L as a shape value may pass through Concat, Unsqueeze, Squeeze and Cast, and must end as
/// the shape input of Reshape or Expand.
fn check_shape_value(index: &Index<'_>, site: &Site) -> Result<(), Refused> {
    let mut terminals = 0;
    let mut stack = vec![site.name.as_str()];
    let mut seen = HashSet::new();
    while let Some(name) = stack.pop() {
        if !seen.insert(name) || seen.len() > 256 {
            return refuse(format!("`{}` reaches a cycle or too far", site.name));
        }
        if index.outputs.contains(name) {
            return refuse(format!("`{}` reaches a graph output", site.name));
        }
        for (node, slot) in index.consumers(name) {
            let n = index.node(*node);
            match (n.op_type, *slot) {
                ("Reshape" | "Expand", 1) => terminals += 1,
                ("Concat", _) | ("Unsqueeze" | "Squeeze" | "Cast", 0) => {
                    stack.extend(n.outputs.iter().copied())
                }
                (op, slot) => {
                    return refuse(format!(
                        "the sequence length `{}` reaches input {slot} of {op}",
                        site.name
                    ))
                }
            }
        }
    }
    if terminals == 0 {
        return refuse(format!("`{}` shapes nothing", site.name));
    }
    Ok(())
}

/// End-of-text pooling: one ArgMax over `input_ids` along the sequence axis (whatever indexes
/// with it can only use L from a Shape op: literal L elsewhere was refused above).
fn check_pooling(index: &Index<'_>) -> Result<(), Refused> {
    let argmaxes: Vec<&Node> = index
        .model
        .graph
        .nodes
        .iter()
        .filter(|n| n.op_type == "ArgMax")
        .collect();
    let [argmax] = argmaxes.as_slice() else {
        return refuse(format!("{} ArgMax nodes, expected one", argmaxes.len()));
    };
    let axis = argmax.attribute("axis").and_then(|a| a.int).unwrap_or(0);
    let over_ids = argmax
        .inputs
        .first()
        .is_some_and(|i| index.through_casts(i) == IDS);
    if !over_ids || !(axis == 1 || axis == -1) {
        return refuse("pooling is not ArgMax over input_ids along the sequence");
    }
    Ok(())
}
