"""Write backbone_calib.onnx: the float backbone with every Conv's input and
output added as graph outputs, and tensors.json listing them (step 1 of the
int8 exploration; pipeline/int8_test.go's TestInt8Calib runs it on calibration scenes)."""
import json, sys
import onnx
from onnx import helper, TensorProto

src, out_model, out_list = sys.argv[1:4]
m = onnx.load(src)
g = m.graph
existing = {o.name for o in g.output} | {i.name for i in g.input}
names = []
for n in g.node:
    if n.op_type == "Conv":
        for t in (n.input[0], n.output[0]):
            if t not in names:
                names.append(t)
for t in names:
    if t not in existing:
        g.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
onnx.save(m, out_model)
json.dump(names, open(out_list, "w"), indent=1)
print(len(names), "tensors")
