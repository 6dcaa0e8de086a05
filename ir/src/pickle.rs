//! A reader for the pickle inside a `torch.save` file that holds a state dict, which executes
//! nothing: it runs the pickle machine over the few opcodes such a pickle uses and knows the
//! handful of globals it names — `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`,
//! `torch._utils._rebuild_parameter` and the typed storage classes (`torch.FloatStorage`, ...) —
//! by name, as data. Any other global, any other call, any other opcode is refused with one line
//! saying which, so a pickle that would run code when Python loads it is never more than text.
//!
//! Why not a crate: `serde-pickle` does not resolve torch's persistent ids (the storages);
//! `repugnant-pickle` is a 0.0.1 scraper; `candle-core`'s reader is part of a whole tensor
//! library. This one is small, every size is bounded by the input's length (each opcode pushes
//! at most one value, strings are length-checked before they are copied, the memo is a map),
//! and the `torch_checkpoint` fuzz target runs it (fuzz/README.md).
//!
//! Format reference: CPython's `Lib/pickletools.py` (opcodes) and PyTorch's
//! `torch/serialization.py` (`_save`: protocol 2, `persistent_id` returning
//! `('storage', storage_type, key, location, numel)`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use safetensors::Dtype;

/// Largest pickle accepted: a 7B state dict's pickle is well under a megabyte.
pub const MAX_PICKLE_BYTES: u64 = 64 << 20;
/// Most dimensions a tensor may have.
const MAX_DIMS: usize = 16;

/// A pickle the reader refuses; `Display` is one line.
#[derive(Debug, thiserror::Error)]
#[error("{msg} (pickle byte {pos})")]
pub struct PickleError {
    pub pos: usize,
    pub msg: String,
}

/// A storage a tensor views: the archive entry `data/{key}` holding `numel` elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageRef {
    pub key: String,
    pub dtype: Dtype,
    pub numel: u64,
}

/// A tensor of the state dict: `shape` elements with `stride`, from element `offset` of its
/// storage (`torch._utils._rebuild_tensor_v2`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRef {
    pub storage: StorageRef,
    pub offset: u64,
    pub shape: Vec<u64>,
    pub stride: Vec<u64>,
}

/// The callables and classes a state-dict pickle may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Global {
    OrderedDict,
    RebuildTensor,
    RebuildParameter,
    Storage(Dtype),
}

impl Global {
    fn resolve(module: &str, name: &str) -> Option<Global> {
        Some(match (module, name) {
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensor,
            ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
            ("torch", storage) => Global::Storage(match storage {
                "FloatStorage" => Dtype::F32,
                "DoubleStorage" => Dtype::F64,
                "HalfStorage" => Dtype::F16,
                "BFloat16Storage" => Dtype::BF16,
                "LongStorage" => Dtype::I64,
                "IntStorage" => Dtype::I32,
                "ShortStorage" => Dtype::I16,
                "CharStorage" => Dtype::I8,
                "ByteStorage" => Dtype::U8,
                "BoolStorage" => Dtype::BOOL,
                _ => return None,
            }),
            _ => return None,
        })
    }
}

type Dict = Rc<RefCell<Vec<(Value, Value)>>>;

/// A value on the pickle machine's stack. Containers are shared (`Rc`), so a memo lookup is
/// never a deep copy.
#[derive(Debug, Clone)]
enum Value {
    None,
    Bool,
    Int(i64),
    Str(Rc<str>),
    Tuple(Rc<[Value]>),
    Dict(Dict),
    Global(Global),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool => "a bool",
            Value::Int(_) => "an int",
            Value::Str(_) => "a string",
            Value::Tuple(_) => "a tuple",
            Value::Dict(_) => "a dict",
            Value::Global(_) => "a class or function",
            Value::Storage(_) => "a storage",
            Value::Tensor(_) => "a tensor",
        }
    }
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    /// Position of the opcode being run, for errors.
    op_pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: BTreeMap<u32, Value>,
}

/// Reads a state-dict pickle: a (possibly ordered) dict of names to tensors, in pickle order.
pub fn read_state_dict(data: &[u8]) -> Result<Vec<(String, TensorRef)>, PickleError> {
    if data.len() as u64 > MAX_PICKLE_BYTES {
        return Err(PickleError {
            pos: 0,
            msg: format!(
                "{} bytes, over the {MAX_PICKLE_BYTES}-byte limit for a state-dict pickle",
                data.len()
            ),
        });
    }
    let mut m = Machine {
        data,
        pos: 0,
        op_pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: BTreeMap::new(),
    };
    let root = m.run()?;
    let Value::Dict(d) = root else {
        return Err(m.err(format!(
            "the pickle holds {}, not a state dict (a dict of tensors)",
            root.kind()
        )));
    };
    let items = d.borrow().clone();
    let mut out = Vec::with_capacity(items.len());
    for (k, v) in items {
        let Value::Str(name) = k else {
            return Err(m.err(format!("a state-dict key is {}, not a string", k.kind())));
        };
        match v {
            Value::Tensor(t) => out.push((name.to_string(), (*t).clone())),
            other => {
                return Err(m.err(format!(
                    "state-dict entry {name} is {}, not a tensor",
                    other.kind()
                )))
            }
        }
    }
    Ok(out)
}

impl<'a> Machine<'a> {
    fn err(&self, msg: impl Into<String>) -> PickleError {
        PickleError {
            pos: self.op_pos,
            msg: msg.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| self.err("truncated: the pickle ends inside an opcode"))?;
        let data: &'a [u8] = self.data;
        self.pos = end;
        Ok(&data[end - n..end])
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn pop(&mut self) -> Result<Value, PickleError> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err(self.err("stack underflow: a value is taken from below a MARK"));
        }
        self.stack
            .pop()
            .ok_or_else(|| self.err("stack underflow: the pickle takes a value it never pushed"))
    }

    fn top(&self) -> Result<&Value, PickleError> {
        self.stack
            .last()
            .ok_or_else(|| self.err("stack underflow: no value on the stack"))
    }

    /// The values pushed since the last MARK, removing the mark.
    fn pop_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| self.err("no MARK before an opcode that needs one"))?;
        Ok(self.stack.split_off(m))
    }

    fn string(&mut self, n: usize) -> Result<Value, PickleError> {
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| self.err("a string is not valid UTF-8"))?;
        Ok(Value::Str(Rc::from(s)))
    }

    /// A GLOBAL's "module\nname\n" line.
    fn line(&mut self) -> Result<String, PickleError> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .take(256)
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.err("a GLOBAL name is unterminated or longer than 256 bytes"))?;
        let s = self.take(n + 1)?;
        let s = std::str::from_utf8(&s[..n]).map_err(|_| self.err("a GLOBAL name is not UTF-8"))?;
        Ok(s.to_string())
    }

    fn global(&self, module: &str, name: &str) -> Result<Value, PickleError> {
        Global::resolve(module, name)
            .map(Value::Global)
            .ok_or_else(|| {
                self.err(format!(
                "global {module}.{name} is not allowed in a state dict; refusing to load a pickle \
                 that would run code"
            ))
            })
    }

    fn push_memo(&mut self, key: u32) -> Result<(), PickleError> {
        let v = self.top()?.clone();
        self.memo.insert(key, v);
        Ok(())
    }

    fn get_memo(&mut self, key: u32) -> Result<(), PickleError> {
        let v =
            self.memo.get(&key).cloned().ok_or_else(|| {
                self.err(format!("memo entry {key} is read before it is written"))
            })?;
        self.stack.push(v);
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<(), PickleError> {
        if !items.len().is_multiple_of(2) {
            return Err(self.err("SETITEMS with an odd number of values"));
        }
        let Value::Dict(d) = self.top()? else {
            return Err(self.err(format!("SETITEM(S) on {}, not a dict", self.top()?.kind())));
        };
        let d = Rc::clone(d);
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            if !matches!(k, Value::Str(_)) {
                return Err(self.err(format!("a dict key is {}, not a string", k.kind())));
            }
            d.borrow_mut().push((k, v));
        }
        Ok(())
    }

    fn run(&mut self) -> Result<Value, PickleError> {
        loop {
            self.op_pos = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(self.err(format!("pickle protocol {proto} is unknown")));
                    }
                }
                0x95 => {
                    // FRAME: an advisory length; the opcodes inside are read as usual.
                    self.take(8)?;
                }
                b'.' => {
                    let v = self.pop()?;
                    return Ok(v);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool),
                0x89 => self.stack.push(Value::Bool),
                b'J' => {
                    let b = self.take(4)?;
                    let v = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    self.stack.push(Value::Int(v.into()));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v.into()));
                }
                b'M' => {
                    let b = self.take(2)?;
                    self.stack
                        .push(Value::Int(u16::from_le_bytes([b[0], b[1]]).into()));
                }
                0x8a => {
                    // LONG1: n bytes of little-endian two's complement.
                    let n = self.u8()? as usize;
                    if n > 8 {
                        return Err(self.err(format!("a {n}-byte integer does not fit 64 bits")));
                    }
                    let b = self.take(n)?;
                    let mut v: i64 = 0;
                    for (i, byte) in b.iter().enumerate() {
                        v |= i64::from(*byte) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.stack.push(Value::Int(v));
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let g = self.global(&module, &name)?;
                    self.stack.push(g);
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        return Err(self.err("STACK_GLOBAL needs two strings"));
                    };
                    let g = self.global(&module, &name)?;
                    self.stack.push(g);
                }
                b'q' => {
                    let k = self.u8()?;
                    self.push_memo(k.into())?;
                }
                b'r' => {
                    let k = self.u32()?;
                    self.push_memo(k)?;
                }
                0x94 => {
                    let k = u32::try_from(self.memo.len())
                        .map_err(|_| self.err("too many memo entries"))?;
                    self.push_memo(k)?;
                }
                b'h' => {
                    let k = self.u8()?;
                    self.get_memo(k.into())?;
                }
                b'j' => {
                    let k = self.u32()?;
                    self.get_memo(k)?;
                }
                b'}' => self.stack.push(Value::Dict(Rc::default())),
                b'd' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Dict(Rc::default()));
                    self.set_items(items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b')' => self.stack.push(Value::Tuple(Rc::from(Vec::new()))),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(Rc::from(items)));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < n
                        || self.marks.last().is_some_and(|&m| m > self.stack.len() - n)
                    {
                        return Err(self.err("stack underflow in TUPLE1/2/3"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(Rc::from(items)));
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let s = self.storage(pid)?;
                    self.stack.push(Value::Storage(Rc::new(s)));
                }
                b'R' => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    let v = self.reduce(f, args)?;
                    self.stack.push(v);
                }
                b'b' => {
                    // BUILD: the state of an OrderedDict is its `__dict__` (the state dict's
                    // `_metadata`), which zamba2c does not need.
                    let state = self.pop()?;
                    match (self.top()?, &state) {
                        (Value::Dict(_), Value::Dict(_) | Value::None) => {}
                        (obj, _) => {
                            return Err(self.err(format!(
                                "BUILD sets the state of {} from {}; only a dict's attributes are \
                                 allowed",
                                obj.kind(),
                                state.kind()
                            )))
                        }
                    }
                }
                other => {
                    return Err(self.err(format!(
                        "opcode 0x{other:02x} ({}) is not used by state dicts; refusing it",
                        opcode_name(other)
                    )))
                }
            }
        }
    }

    /// A BINPERSID id: `('storage', StorageClass, key, location, numel)`.
    fn storage(&self, pid: Value) -> Result<StorageRef, PickleError> {
        let bad = || self.err("a persistent id is not ('storage', class, key, location, numel)");
        let Value::Tuple(t) = pid else {
            return Err(bad());
        };
        match &t[..] {
            [Value::Str(tag), Value::Global(Global::Storage(dtype)), Value::Str(key), Value::Str(_), Value::Int(numel)]
                if &**tag == "storage" =>
            {
                let numel = u64::try_from(*numel)
                    .map_err(|_| self.err(format!("storage {key}: negative size {numel}")))?;
                if key.is_empty()
                    || key.len() > 64
                    || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(self.err(format!("storage key {key:?} is not a plain name")));
                }
                Ok(StorageRef {
                    key: key.to_string(),
                    dtype: *dtype,
                    numel,
                })
            }
            _ => Err(bad()),
        }
    }

    fn reduce(&self, f: Value, args: Value) -> Result<Value, PickleError> {
        let Value::Tuple(args) = args else {
            return Err(self.err(format!("REDUCE arguments are {}, not a tuple", args.kind())));
        };
        match f {
            Value::Global(Global::OrderedDict) if args.is_empty() => Ok(Value::Dict(Rc::default())),
            Value::Global(Global::RebuildTensor) => self.rebuild_tensor(&args),
            Value::Global(Global::RebuildParameter) => match &args[..] {
                [t @ Value::Tensor(_), Value::Bool, Value::Dict(_)] => Ok(t.clone()),
                _ => Err(self.err("_rebuild_parameter needs (tensor, requires_grad, hooks)")),
            },
            other => Err(self.err(format!(
                "REDUCE calls {} with {} arguments; only OrderedDict(), _rebuild_tensor_v2 and \
                 _rebuild_parameter are allowed",
                other.kind(),
                args.len()
            ))),
        }
    }

    /// `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`.
    fn rebuild_tensor(&self, args: &[Value]) -> Result<Value, PickleError> {
        let usage = || {
            self.err(
                "_rebuild_tensor_v2 needs (storage, offset, size, stride, requires_grad, hooks)",
            )
        };
        let (storage, offset, size, stride) = match args {
            [Value::Storage(s), Value::Int(o), Value::Tuple(size), Value::Tuple(stride), Value::Bool, Value::Dict(_), rest @ ..]
                if rest.is_empty()
                    || (rest.len() == 1 && matches!(rest[0], Value::None | Value::Dict(_))) =>
            {
                (s, *o, size, stride)
            }
            _ => return Err(usage()),
        };
        let ints = |t: &[Value], what: &str| -> Result<Vec<u64>, PickleError> {
            if t.len() > MAX_DIMS {
                return Err(self.err(format!("a tensor {what} has {} dimensions", t.len())));
            }
            t.iter()
                .map(|v| match v {
                    Value::Int(i) if *i >= 0 => Ok(*i as u64),
                    _ => Err(self.err(format!("a tensor {what} holds {}", v.kind()))),
                })
                .collect()
        };
        let shape = ints(size, "size")?;
        let stride = ints(stride, "stride")?;
        if shape.len() != stride.len() {
            return Err(self.err("a tensor's size and stride have different lengths"));
        }
        let offset = u64::try_from(offset).map_err(|_| self.err("a negative storage offset"))?;
        Ok(Value::Tensor(Rc::new(TensorRef {
            storage: (**storage).clone(),
            offset,
            shape,
            stride,
        })))
    }
}

/// pickletools' name of an opcode, for refusals.
fn opcode_name(op: u8) -> &'static str {
    match op {
        b'i' => "INST",
        b'o' => "OBJ",
        0x81 => "NEWOBJ",
        0x92 => "NEWOBJ_EX",
        b'P' => "PERSID",
        b']' => "EMPTY_LIST",
        b'a' => "APPEND",
        b'e' => "APPENDS",
        b'l' => "LIST",
        b'G' => "BINFLOAT",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'L' => "LONG",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'B' | b'C' | 0x8e | 0x96 | 0x97 | 0x98 => "bytes",
        0x82..=0x84 => "EXT",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'g' | b'p' => "GET/PUT (text)",
        0x8f..=0x91 => "set",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The data.pkl of `torch.save(torch.nn.Linear(2, 3).state_dict(), f)` (torch 2.15):
    /// OrderedDict, two tensors, the `_metadata` BUILD.
    fn tiny() -> Vec<u8> {
        b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01(X\x06\x00\x00\x00weightq\x02ctorch._utils\n_rebuild_tensor_v2\nq\x03((X\x07\x00\x00\x00storageq\x04ctorch\nFloatStorage\nq\x05X\x01\x00\x00\x000q\x06X\x03\x00\x00\x00cpuq\x07K\x06tq\x08QK\x00K\x03K\x02\x86q\tK\x02K\x01\x86q\n\x89h\x00)Rq\x0btq\x0cRq\rX\x04\x00\x00\x00biasq\x0eh\x03((h\x04h\x05X\x01\x00\x00\x001q\x0fh\x07K\x03tq\x10QK\x00K\x03\x85q\x11K\x01\x85q\x12\x89h\x00)Rq\x13tq\x14Rq\x15u}q\x16X\t\x00\x00\x00_metadataq\x17h\x00)Rq\x18X\x00\x00\x00\x00q\x19}q\x1aX\x07\x00\x00\x00versionq\x1bK\x01sssb.".to_vec()
    }

    #[test]
    fn a_state_dict_reads() {
        let sd = read_state_dict(&tiny()).unwrap();
        let names: Vec<&str> = sd.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["weight", "bias"]);
        let w = &sd[0].1;
        assert_eq!(
            (w.shape.as_slice(), w.stride.as_slice(), w.offset),
            (&[3, 2][..], &[2, 1][..], 0)
        );
        assert_eq!(
            w.storage,
            StorageRef {
                key: "0".into(),
                dtype: Dtype::F32,
                numel: 6
            }
        );
        assert_eq!(sd[1].1.storage.key, "1");
        assert_eq!(sd[1].1.shape, [3]);
    }

    #[test]
    fn hostile_pickles_are_refused_in_one_line() {
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "os.system",
                b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R.".to_vec(),
                "global os.system",
            ),
            (
                "builtins.eval",
                b"cbuiltins\neval\n.".to_vec(),
                "builtins.eval",
            ),
            (
                "NEWOBJ",
                b"\x80\x02ccollections\nOrderedDict\n)\x81.".to_vec(),
                "NEWOBJ",
            ),
            ("truncated", tiny()[..40].to_vec(), "truncated"),
            ("empty", vec![], "truncated"),
            ("huge string", b"X\xff\xff\xff\xff".to_vec(), "truncated"),
            ("memo miss", b"h\x07.".to_vec(), "memo entry 7"),
            ("not a dict", b"K\x01.".to_vec(), "an int"),
            ("underflow", b"s.".to_vec(), "underflow"),
            (
                "OrderedDict with args",
                b"ccollections\nOrderedDict\nK\x01\x85R.".to_vec(),
                "REDUCE",
            ),
            (
                "storage class called",
                b"ctorch\nFloatStorage\n)R.".to_vec(),
                "REDUCE",
            ),
        ];
        for (what, bytes, needle) in cases {
            let e = read_state_dict(&bytes).unwrap_err().to_string();
            assert!(!e.contains('\n'), "{what}: {e}");
            assert!(e.contains(needle), "{what}: {e}");
        }
    }
}
