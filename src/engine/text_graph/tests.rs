//! Pattern checks on small hand-built graphs, and on the fixtures.

use super::onnx::{Dim, Model, FLOAT, INT32};
use super::rewrite::{constant, int_attr, node};
use super::wire::{put_bytes, put_int, put_packed_ints};
use super::*;

const NEG_INF: f32 = f32::NEG_INFINITY;

fn float_tensor(name: &str, dims: &[i64], values: &[f32]) -> Vec<u8> {
    let mut t = Vec::new();
    put_packed_ints(&mut t, 1, dims);
    put_int(&mut t, 2, FLOAT);
    put_bytes(&mut t, 8, name.as_bytes());
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    put_bytes(&mut t, 9, &raw);
    t
}

fn float_constant(output: &str, dims: &[i64], values: &[f32]) -> Vec<u8> {
    let mut attr = Vec::new();
    put_bytes(&mut attr, 1, b"value");
    put_bytes(&mut attr, 5, &float_tensor("", dims, values));
    put_int(&mut attr, 20, 4);
    node("Constant", &[], &[output], &[attr])
}

fn scalar_constant(output: &str, v: i64) -> Vec<u8> {
    let mut t = Vec::new();
    put_int(&mut t, 2, super::onnx::INT64);
    put_packed_ints(&mut t, 7, &[v]);
    let mut attr = Vec::new();
    put_bytes(&mut attr, 1, b"value");
    put_bytes(&mut attr, 5, &t);
    put_int(&mut attr, 20, 4);
    node("Constant", &[], &[output], &[attr])
}

enum D {
    V(i64),
    P(&'static str),
}

fn value_info(name: &str, elem: i64, dims: &[D]) -> Vec<u8> {
    let mut shape = Vec::new();
    for d in dims {
        let mut dim = Vec::new();
        match d {
            D::V(v) => put_int(&mut dim, 1, *v),
            D::P(p) => put_bytes(&mut dim, 2, p.as_bytes()),
        }
        put_bytes(&mut shape, 1, &dim);
    }
    let mut tensor = Vec::new();
    put_int(&mut tensor, 1, elem);
    put_bytes(&mut tensor, 2, &shape);
    let mut ty = Vec::new();
    put_bytes(&mut ty, 1, &tensor);
    let mut vi = Vec::new();
    put_bytes(&mut vi, 1, name.as_bytes());
    put_bytes(&mut vi, 2, &ty);
    vi
}

fn causal(l: usize) -> Vec<f32> {
    (0..l * l)
        .map(|k| if k % l > k / l { NEG_INF } else { 0.0 })
        .collect()
}

/// A one-block causal text tower in the exported CLIP layout, L = `l`, width `d`.
struct Graph {
    opset: i64,
    nodes: Vec<Vec<u8>>,
    initializers: Vec<Vec<u8>>,
    inputs: Vec<Vec<u8>>,
    value_info: Vec<Vec<u8>>,
    unknown: Vec<u8>,
}

impl Graph {
    fn clip(l: i64, d: i64) -> Graph {
        let emb: Vec<f32> = (0..10 * d).map(|v| v as f32 * 0.1).collect();
        let pos: Vec<f32> = (0..l * d).map(|v| v as f32 * 0.01).collect();
        let cast =
            |input: &str, out: &str, to: i64| node("Cast", &[input], &[out], &[int_attr("to", to)]);
        let mut perm = Vec::new();
        put_bytes(&mut perm, 1, b"perm");
        put_packed_ints(&mut perm, 8, &[0, 2, 1]);
        put_int(&mut perm, 20, 7);
        let nodes = vec![
            cast("input_ids", "ids64", 7),
            node("Gather", &["emb", "ids64"], &["tok"], &[]),
            node("Add", &["tok", "pos"], &["x"], &[]),
            node("Transpose", &["x"], &["xt"], &[perm]),
            node("MatMul", &["x", "xt"], &["scores"], &[]),
            float_constant("mask", &[1, 1, l, l], &causal(l as usize)),
            node("Add", &["scores", "mask"], &["masked"], &[]),
            node("Softmax", &["masked"], &["probs"], &[int_attr("axis", -1)]),
            node("MatMul", &["probs", "x"], &["y"], &[]),
            constant("minus_one", &[-1]),
            constant("len", &[l]),
            constant("width", &[d]),
            node(
                "Concat",
                &["minus_one", "len", "width"],
                &["shape"],
                &[int_attr("axis", 0)],
            ),
            node("Reshape", &["y", "shape"], &["y2"], &[]),
            node(
                "ArgMax",
                &["ids64"],
                &["eot"],
                &[int_attr("axis", -1), int_attr("keepdims", 0)],
            ),
            node("Shape", &["y2"], &["s"], &[]),
            scalar_constant("one", 1),
            scalar_constant("zero", 0),
            node("Gather", &["s", "one"], &["stride"], &[int_attr("axis", 0)]),
            node("Gather", &["s", "zero"], &["b"], &[int_attr("axis", 0)]),
            node("Range", &["zero", "b", "one"], &["r"], &[]),
            node("Mul", &["r", "stride"], &["offsets"], &[]),
            node("Add", &["eot", "offsets"], &["rows"], &[]),
            node("Flatten", &["y2"], &["flat"], &[int_attr("axis", 2)]),
            node(
                "Gather",
                &["flat", "rows"],
                &["text_embeds"],
                &[int_attr("axis", 0)],
            ),
        ];
        Graph {
            opset: 17,
            nodes,
            initializers: vec![
                float_tensor("emb", &[10, d], &emb),
                float_tensor("pos", &[l, d], &pos),
            ],
            inputs: vec![
                value_info("input_ids", INT32, &[D::P("batch"), D::V(l)]),
                value_info("attention_mask", INT32, &[D::P("batch"), D::V(l)]),
            ],
            value_info: Vec::new(),
            unknown: Vec::new(),
        }
    }

    /// Replaces the node that produces `output`.
    fn replace(&mut self, output: &str, with: Vec<u8>) {
        let i = self
            .nodes
            .iter()
            .position(|n| node_outputs(n).contains(&output.to_string()))
            .unwrap();
        self.nodes[i] = with;
    }

    fn bytes(&self) -> Vec<u8> {
        let mut g = Vec::new();
        for n in &self.nodes {
            put_bytes(&mut g, 1, n);
        }
        put_bytes(&mut g, 2, b"text");
        for t in &self.initializers {
            put_bytes(&mut g, 5, t);
        }
        for i in &self.inputs {
            put_bytes(&mut g, 11, i);
        }
        put_bytes(
            &mut g,
            12,
            &value_info("text_embeds", FLOAT, &[D::P("batch"), D::V(3)]),
        );
        for v in &self.value_info {
            put_bytes(&mut g, 13, v);
        }
        g.extend_from_slice(&self.unknown);
        let mut opset = Vec::new();
        put_int(&mut opset, 2, self.opset);
        let mut m = Vec::new();
        put_int(&mut m, 1, 8);
        put_bytes(&mut m, 2, b"test");
        put_bytes(&mut m, 7, &g);
        put_bytes(&mut m, 8, &opset);
        m.extend_from_slice(&self.unknown);
        m
    }
}

fn node_outputs(node: &[u8]) -> Vec<String> {
    super::wire::fields(node)
        .unwrap()
        .iter()
        .filter(|f| f.number == 2)
        .map(|f| f.str().unwrap().to_string())
        .collect()
}

fn refused(g: &Graph) -> String {
    match make_dynamic(&g.bytes()) {
        Ok(_) => panic!("the graph was accepted"),
        Err(e) => e.to_string(),
    }
}

/// Every node input is a graph input, an initializer or an earlier node's output.
fn assert_sorted(model: &Model<'_>) {
    let mut known: std::collections::HashSet<&str> = model
        .graph
        .inputs
        .iter()
        .map(|i| i.name)
        .chain(model.graph.initializers.iter().map(|t| t.name))
        .collect();
    for n in &model.graph.nodes {
        for i in &n.inputs {
            assert!(known.contains(i), "`{i}` used before it is produced");
        }
        known.extend(n.outputs.iter().copied());
    }
}

#[test]
fn a_clip_text_graph_is_rewritten_to_a_symbolic_sequence_axis() {
    let g = Graph::clip(4, 3);
    let dynamic = make_dynamic(&g.bytes()).unwrap();
    assert_eq!(
        (dynamic.length, dynamic.masks, dynamic.shape_values),
        (4, 1, 1)
    );
    let m = Model::parse(&dynamic.bytes).unwrap();
    for input in &m.graph.inputs {
        assert_eq!(
            input.dims.as_deref(),
            Some(&[Dim::Param("batch"), Dim::Param("sequence")][..])
        );
    }
    assert_sorted(&m);
    let consumers_of = |name: &str| -> Vec<&str> {
        m.graph
            .nodes
            .iter()
            .filter(|n| n.inputs.contains(&name))
            .map(|n| n.op_type)
            .collect()
    };
    // The table and the mask are only read through their slices; L no longer shapes anything.
    assert_eq!(consumers_of("pos"), ["Slice"]);
    assert_eq!(consumers_of("mask"), ["Slice"]);
    assert!(consumers_of("len").is_empty());
    assert!(!m.graph.nodes.iter().any(|n| n.outputs.contains(&"len")));
    let reshape_shape = m
        .graph
        .nodes
        .iter()
        .find(|n| n.op_type == "Concat" && n.outputs == ["shape"])
        .unwrap();
    assert_eq!(
        reshape_shape.inputs,
        ["minus_one", "text_length/seq", "width"]
    );
    // Everything else is as it was.
    assert_eq!(m.graph.initializers.len(), 2);
    // Added: 4 constants, Shape, Gather, Concat and the two slices; the shape constant dropped.
    assert_eq!(m.graph.nodes.len(), g.nodes.len() - 1 + 9);
}

#[test]
fn fields_the_rewrite_does_not_model_are_kept() {
    let mut g = Graph::clip(4, 3);
    let mut unknown = Vec::new();
    put_bytes(&mut unknown, 999, b"future field");
    put_int(&mut unknown, 1000, 42);
    g.unknown = unknown.clone();
    // An unknown field inside a node and a doc string on an input.
    let mut gather = node("Gather", &["emb", "ids64"], &["tok"], &[]);
    gather.extend_from_slice(&unknown);
    g.replace("tok", gather.clone());
    put_bytes(&mut g.inputs[0], 3, b"token ids");
    let original = g.bytes();
    let out = make_dynamic(&original).unwrap().bytes;
    let find =
        |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).filter(|w| *w == needle).count();
    assert_eq!(find(&out, &unknown), 3, "model, graph and node fields");
    assert_eq!(
        find(&out, &gather),
        1,
        "an untouched node is copied byte for byte"
    );
    assert_eq!(find(&out, b"token ids"), 1);
    assert_eq!(find(&out, b"test"), 1, "producer name");
}

#[test]
fn value_info_stating_the_fixed_length_is_dropped() {
    let mut g = Graph::clip(4, 3);
    g.value_info = vec![
        value_info("x", FLOAT, &[D::P("batch"), D::V(4), D::V(3)]),
        value_info("eot", super::onnx::INT64, &[D::P("batch")]),
    ];
    let m_bytes = make_dynamic(&g.bytes()).unwrap().bytes;
    let m = Model::parse(&m_bytes).unwrap();
    let names: Vec<&str> = m.graph.value_info.iter().map(|v| v.name).collect();
    assert_eq!(names, ["eot"]);
}

#[test]
fn masks_that_are_not_causal_are_refused() {
    let mut g = Graph::clip(4, 3);
    let mut values = causal(4);
    values[1] = 0.0; // position 0 sees position 1
    g.replace("mask", float_constant("mask", &[1, 1, 4, 4], &values));
    assert!(refused(&g).contains("not a causal mask"), "{}", refused(&g));
    let mut values = causal(4);
    values[4] = -1.0; // below the diagonal
    g.replace("mask", float_constant("mask", &[1, 1, 4, 4], &values));
    assert!(refused(&g).contains("not a causal mask"));
    let mut values = causal(4);
    values[1] = -100.0; // too weak to mask
    g.replace("mask", float_constant("mask", &[1, 1, 4, 4], &values));
    assert!(refused(&g).contains("not a causal mask"));
    // A very negative finite value (float16 exports) is a mask.
    let values: Vec<f32> = causal(4).iter().map(|v| v.max(-65504.0)).collect();
    g.replace("mask", float_constant("mask", &[1, 1, 4, 4], &values));
    assert!(make_dynamic(&g.bytes()).is_ok());
}

#[test]
fn bidirectional_attention_is_refused() {
    let mut g = Graph::clip(4, 3);
    // Softmax straight on the scores: every position sees the padding.
    g.replace(
        "probs",
        node("Softmax", &["scores"], &["probs"], &[int_attr("axis", -1)]),
    );
    let why = refused(&g);
    assert!(why.contains("Softmax") || why.contains("mask"), "{why}");
}

#[test]
fn inputs_must_be_fixed_length_input_ids_and_attention_mask() {
    let mut g = Graph::clip(4, 3);
    g.inputs[0] = value_info("input_ids", INT32, &[D::P("batch"), D::P("sequence")]);
    assert!(refused(&g).contains("fixed L"));
    let mut g = Graph::clip(4, 3);
    g.inputs[1] = value_info("attention_mask", INT32, &[D::P("batch"), D::V(5)]);
    assert!(refused(&g).contains("disagree"));
    let mut g = Graph::clip(4, 3);
    g.inputs.push(value_info(
        "token_type_ids",
        INT32,
        &[D::P("batch"), D::V(4)],
    ));
    assert!(refused(&g).contains("inputs are"));
}

#[test]
fn a_width_equal_to_the_sequence_length_is_ambiguous_and_refused() {
    // Every [.., 4] tensor (the embedding table too) is now ambiguous.
    let why = refused(&Graph::clip(4, 4));
    assert!(why.contains("sequence length"), "{why}");
}

#[test]
fn a_literal_length_outside_a_shape_is_refused() {
    // The pooling stride folded to a literal L would gather the wrong rows once L changes.
    let mut g = Graph::clip(4, 3);
    g.replace("stride", scalar_constant("stride", 4));
    let why = refused(&g);
    assert!(why.contains("reaches input 1 of Mul"), "{why}");
    // L as an attribute.
    let mut g = Graph::clip(4, 3);
    g.replace(
        "flat",
        node("Flatten", &["y2"], &["flat"], &[int_attr("axis", 4)]),
    );
    assert!(refused(&g).contains("attribute `axis`"));
    // An integer table with L entries (position ids).
    let mut g = Graph::clip(4, 3);
    g.nodes.push(constant("position_ids", &[0, 1, 2, 3]));
    g.nodes
        .push(node("Gather", &["pos", "position_ids"], &["unused"], &[]));
    assert!(
        refused(&g).contains("unrecognised place"),
        "{}",
        refused(&g)
    );
    let mut g2 = Graph::clip(4, 3);
    g2.nodes
        .push(node("Slice", &["y2", "len", "len"], &["cut"], &[]));
    assert!(refused(&g2).contains("reaches input 1 of Slice"));
}

#[test]
fn pooling_must_be_argmax_over_the_token_ids() {
    let mut g = Graph::clip(4, 3);
    g.replace(
        "eot",
        node(
            "ArgMax",
            &["y2"],
            &["eot"],
            &[int_attr("axis", -1), int_attr("keepdims", 0)],
        ),
    );
    assert!(refused(&g).contains("ArgMax over input_ids"));
    let mut g = Graph::clip(4, 3);
    g.replace(
        "eot",
        node("ArgMax", &["ids64"], &["eot"], &[int_attr("keepdims", 0)]),
    );
    assert!(
        refused(&g).contains("ArgMax over input_ids"),
        "axis 0 is the batch"
    );
    let mut g = Graph::clip(4, 3);
    g.nodes.push(node(
        "ArgMax",
        &["ids64"],
        &["eot2"],
        &[int_attr("axis", 1)],
    ));
    assert!(refused(&g).contains("2 ArgMax"));
}

#[test]
fn the_positional_table_must_be_added_to_the_token_embeddings() {
    let mut g = Graph::clip(4, 3);
    g.replace("x", node("Mul", &["tok", "pos"], &["x"], &[]));
    assert!(refused(&g).contains("not Add"));
    let mut g = Graph::clip(4, 3);
    g.nodes.push(node("Add", &["pos", "pos"], &["twice"], &[]));
    assert!(refused(&g).contains("uses"));
}

#[test]
fn unusual_graphs_are_refused() {
    let mut g = Graph::clip(4, 3);
    g.opset = 12;
    assert!(refused(&g).contains("older than 13"));
    let mut g = Graph::clip(4, 3);
    let mut custom = node("Relu", &["y2"], &["r"], &[]);
    put_bytes(&mut custom, 7, b"com.microsoft");
    g.nodes.push(custom);
    assert!(refused(&g).contains("domain"));
    let mut g = Graph::clip(4, 3);
    let mut branch = Vec::new();
    put_bytes(&mut branch, 1, b"then_branch");
    put_bytes(&mut branch, 6, b"");
    put_int(&mut branch, 20, 5);
    g.nodes.push(node("If", &["cond"], &["o"], &[branch]));
    assert!(refused(&g).contains("subgraph"));
    let mut g = Graph::clip(4, 3);
    put_int(&mut g.initializers[1], 14, 1); // data_location: EXTERNAL
    assert!(refused(&g).contains("outside the model"));
    let mut g = Graph::clip(4, 3);
    g.nodes.push(node("Relu", &["y2"], &["text_length/x"], &[]));
    assert!(refused(&g).contains("already has tensors"));
}

#[test]
fn truncated_or_corrupt_bytes_are_refused() {
    let bytes = Graph::clip(4, 3).bytes();
    assert!(matches!(
        make_dynamic(&bytes[..bytes.len() - 3]),
        Err(Refused::Wire(_))
    ));
    assert!(make_dynamic(b"not a model at all").is_err());
    assert!(make_dynamic(&[]).is_err());
}

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

#[test]
fn the_fixture_clip_text_graph_is_recognised() {
    let bytes = fixture("tests/fixtures/model/textual.onnx");
    let dynamic = make_dynamic(&bytes).unwrap();
    // Three transformer blocks: a mask and two K/V shape values each.
    assert_eq!(
        (dynamic.length, dynamic.masks, dynamic.shape_values),
        (77, 3, 6)
    );
    assert_sorted(&Model::parse(&dynamic.bytes).unwrap());
    // Altered: one masked score of one block let through.
    let inf = NEG_INF.to_le_bytes();
    let at = bytes.windows(4).position(|w| w == inf).unwrap();
    let mut altered = bytes.clone();
    altered[at..at + 4].copy_from_slice(&0f32.to_le_bytes());
    let why = make_dynamic(&altered).unwrap_err().to_string();
    assert!(why.contains("not a causal mask"), "{why}");
    assert!(make_dynamic(&bytes[..bytes.len() / 2]).is_err());
}

#[test]
fn the_multilingual_text_towers_are_refused() {
    for path in [
        "tests/fixtures/mclip/textual.onnx",
        "tests/fixtures/mclip-fp16/textual.onnx",
    ] {
        let why = make_dynamic(&fixture(path)).unwrap_err().to_string();
        assert!(!why.is_empty(), "{path}");
    }
}
