//! Read-only views of the ONNX messages the rewrite inspects (field numbers from `onnx.proto`).
//! Each view keeps its message's fields so that an edit can copy the untouched ones verbatim.

use super::wire::{fields, Field, WireError};
use half::f16;

/// `TensorProto.DataType` values the rewrite reads.
pub(crate) const FLOAT: i64 = 1;
pub(crate) const INT32: i64 = 6;
pub(crate) const INT64: i64 = 7;
pub(crate) const FLOAT16: i64 = 10;

pub(crate) struct Model<'a> {
    pub fields: Vec<Field<'a>>,
    pub graph: Graph<'a>,
    /// `(domain, version)` of each operator set import.
    pub opsets: Vec<(&'a str, i64)>,
    /// Model-local functions (25) or training information (20): not handled.
    pub has_functions_or_training: bool,
}

pub(crate) struct Graph<'a> {
    pub fields: Vec<Field<'a>>,
    pub nodes: Vec<Node<'a>>,
    pub initializers: Vec<Tensor<'a>>,
    pub inputs: Vec<ValueInfo<'a>>,
    pub outputs: Vec<ValueInfo<'a>>,
    pub value_info: Vec<ValueInfo<'a>>,
    pub has_sparse_initializers: bool,
}

pub(crate) struct Node<'a> {
    pub fields: Vec<Field<'a>>,
    pub inputs: Vec<&'a str>,
    pub outputs: Vec<&'a str>,
    pub op_type: &'a str,
    pub domain: &'a str,
    pub attributes: Vec<Attribute<'a>>,
}

pub(crate) struct Attribute<'a> {
    pub name: &'a str,
    pub int: Option<i64>,
    pub ints: Vec<i64>,
    pub tensor: Option<Tensor<'a>>,
    /// Carries a graph, graphs, sparse tensors or other tensors: never expected here.
    pub nested: bool,
}

pub(crate) struct Tensor<'a> {
    pub name: &'a str,
    pub dims: Vec<i64>,
    pub data_type: i64,
    raw: Option<&'a [u8]>,
    float_data: Vec<f32>,
    int32_data: Vec<i64>,
    int64_data: Vec<i64>,
    /// Stored outside the model file (data_location 1 or external_data entries).
    pub external: bool,
}

/// A tensor-typed graph input, output or value_info entry.
pub(crate) struct ValueInfo<'a> {
    pub name: &'a str,
    pub elem_type: Option<i64>,
    pub dims: Option<Vec<Dim<'a>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dim<'a> {
    Value(i64),
    Param(&'a str),
    Unknown,
}

impl<'a> Model<'a> {
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        let fields = fields(bytes)?;
        let mut graph = None;
        let mut opsets = Vec::new();
        let mut has_functions_or_training = false;
        for f in &fields {
            match f.number {
                7 => graph = Some(Graph::parse(f.bytes()?)?),
                8 => {
                    let (mut domain, mut version) = ("", 0);
                    for g in super::wire::fields(f.bytes()?)? {
                        match g.number {
                            1 => domain = g.str()?,
                            2 => version = g.int()?,
                            _ => {}
                        }
                    }
                    opsets.push((domain, version));
                }
                20 | 25 => has_functions_or_training = true,
                _ => {}
            }
        }
        Ok(Model {
            graph: graph.ok_or(WireError::FieldType(7))?,
            fields,
            opsets,
            has_functions_or_training,
        })
    }
}

impl<'a> Graph<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        let fields = fields(bytes)?;
        let mut g = Graph {
            fields: Vec::new(),
            nodes: Vec::new(),
            initializers: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            value_info: Vec::new(),
            has_sparse_initializers: false,
        };
        for f in &fields {
            match f.number {
                1 => g.nodes.push(Node::parse(f.bytes()?)?),
                5 => g.initializers.push(Tensor::parse(f.bytes()?)?),
                11 => g.inputs.push(ValueInfo::parse(f.bytes()?)?),
                12 => g.outputs.push(ValueInfo::parse(f.bytes()?)?),
                13 => g.value_info.push(ValueInfo::parse(f.bytes()?)?),
                15 => g.has_sparse_initializers = true,
                _ => {}
            }
        }
        g.fields = fields;
        Ok(g)
    }
}

impl<'a> Node<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        let fields = fields(bytes)?;
        let mut n = Node {
            fields: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            op_type: "",
            domain: "",
            attributes: Vec::new(),
        };
        for f in &fields {
            match f.number {
                1 => n.inputs.push(f.str()?),
                2 => n.outputs.push(f.str()?),
                4 => n.op_type = f.str()?,
                5 => n.attributes.push(Attribute::parse(f.bytes()?)?),
                7 => n.domain = f.str()?,
                _ => {}
            }
        }
        n.fields = fields;
        Ok(n)
    }

    pub(crate) fn attribute(&self, name: &str) -> Option<&Attribute<'a>> {
        self.attributes.iter().find(|a| a.name == name)
    }

    /// Whether the node is in the default operator set.
    pub(crate) fn is_default_domain(&self) -> bool {
        self.domain.is_empty() || self.domain == "ai.onnx"
    }
}

impl<'a> Attribute<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        let mut a = Attribute {
            name: "",
            int: None,
            ints: Vec::new(),
            tensor: None,
            nested: false,
        };
        for f in fields(bytes)? {
            match f.number {
                1 => a.name = f.str()?,
                3 => a.int = Some(f.int()?),
                5 => a.tensor = Some(Tensor::parse(f.bytes()?)?),
                8 => a.ints.extend(f.ints()?),
                6 | 10 | 11 | 22 | 23 => a.nested = true,
                _ => {}
            }
        }
        Ok(a)
    }
}

impl<'a> Tensor<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        let mut t = Tensor {
            name: "",
            dims: Vec::new(),
            data_type: 0,
            raw: None,
            float_data: Vec::new(),
            int32_data: Vec::new(),
            int64_data: Vec::new(),
            external: false,
        };
        for f in fields(bytes)? {
            match f.number {
                1 => t.dims.extend(f.ints()?),
                2 => t.data_type = f.int()?,
                4 => t.float_data.extend(f.floats()?),
                5 => t.int32_data.extend(f.ints()?),
                7 => t.int64_data.extend(f.ints()?),
                8 => t.name = f.str()?,
                9 => t.raw = Some(f.bytes()?),
                13 => t.external = true,
                14 => t.external |= f.int()? == 1,
                // Segments (3) split a tensor across messages: not produced by exporters.
                3 => t.external = true,
                _ => {}
            }
        }
        Ok(t)
    }

    /// Number of elements the dims describe (None if a dim is negative or it overflows).
    pub(crate) fn element_count(&self) -> Option<usize> {
        self.dims.iter().try_fold(1usize, |acc, d| {
            usize::try_from(*d).ok().and_then(|d| acc.checked_mul(d))
        })
    }

    /// The values of an INT32 or INT64 tensor (None for other types or inconsistent data).
    pub(crate) fn int_values(&self) -> Option<Vec<i64>> {
        let len = self.element_count()?;
        let values: Vec<i64> = match (self.data_type, self.raw) {
            (INT64, Some(raw)) => raw
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
            (INT32, Some(raw)) => raw
                .chunks_exact(4)
                .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            (INT64, None) => self.int64_data.clone(),
            (INT32, None) => self.int32_data.iter().map(|v| *v as i32 as i64).collect(),
            _ => return None,
        };
        (values.len() == len).then_some(values)
    }

    /// The values of a FLOAT or FLOAT16 tensor, widened exactly (None for other types).
    pub(crate) fn float_values(&self) -> Option<Vec<f32>> {
        let len = self.element_count()?;
        let values: Vec<f32> = match (self.data_type, self.raw) {
            (FLOAT, Some(raw)) => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            (FLOAT16, Some(raw)) => raw
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            (FLOAT, None) => self.float_data.clone(),
            (FLOAT16, None) => self
                .int32_data
                .iter()
                .map(|v| f16::from_bits(*v as u16).to_f32())
                .collect(),
            _ => return None,
        };
        (values.len() == len).then_some(values)
    }

    pub(crate) fn is_float(&self) -> bool {
        self.data_type == FLOAT || self.data_type == FLOAT16
    }

    pub(crate) fn is_int(&self) -> bool {
        self.data_type == INT32 || self.data_type == INT64
    }
}

impl<'a> ValueInfo<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        let mut v = ValueInfo {
            name: "",
            elem_type: None,
            dims: None,
        };
        for f in fields(bytes)? {
            match f.number {
                1 => v.name = f.str()?,
                2 => {
                    for t in fields(f.bytes()?)? {
                        if t.number == 1 {
                            v.read_tensor_type(t.bytes()?)?;
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(v)
    }

    fn read_tensor_type(&mut self, bytes: &'a [u8]) -> Result<(), WireError> {
        for f in fields(bytes)? {
            match f.number {
                1 => self.elem_type = Some(f.int()?),
                2 => {
                    let mut dims = Vec::new();
                    for d in fields(f.bytes()?)? {
                        if d.number == 1 {
                            dims.push(Dim::parse(d.bytes()?)?);
                        }
                    }
                    self.dims = Some(dims);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether any dimension is the fixed value `length`.
    pub(crate) fn has_dim(&self, length: i64) -> bool {
        self.dims
            .as_ref()
            .is_some_and(|d| d.contains(&Dim::Value(length)))
    }
}

impl<'a> Dim<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        let mut dim = Dim::Unknown;
        for f in fields(bytes)? {
            match f.number {
                1 => dim = Dim::Value(f.int()?),
                2 => dim = Dim::Param(f.str()?),
                _ => {}
            }
        }
        Ok(dim)
    }
}
