//! A host tensor of f32 values: the interpreter's value type.

/// Row-major f32 tensor with a concrete shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor of zeros.
    pub fn zeros(shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Tensor {
            shape,
            data: vec![0.0; n],
        }
    }
    /// Wraps data; `data.len()` must equal the product of `shape`.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Tensor { shape, data }
    }
    /// Size of the last axis.
    pub fn width(&self) -> usize {
        *self.shape.last().unwrap_or(&1)
    }
    /// Number of rows (product of all axes but the last).
    pub fn rows(&self) -> usize {
        self.data.len() / self.width().max(1)
    }
}
