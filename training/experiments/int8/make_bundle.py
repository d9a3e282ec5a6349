"""Copy a vild bundle and replace some of its files, updating the manifest's
sha256 entries: make_bundle.py SRC_DIR OUT_DIR name=path [name=path ...]
(e.g. backbone.onnx=calib/backbone_int8_all.onnx)."""
import hashlib, json, shutil, sys
src, out = sys.argv[1:3]
shutil.rmtree(out, ignore_errors=True)
shutil.copytree(src, out)
text = open(f"{out}/manifest.json").read()
sums = json.loads(text)["sha256"]
for arg in sys.argv[3:]:
    name, path = arg.split("=", 1)
    shutil.copyfile(path, f"{out}/{name}")
    new = hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert text.count(sums[name]) == 1
    text = text.replace(sums[name], new)
open(f"{out}/manifest.json", "w").write(text)
print(out)
