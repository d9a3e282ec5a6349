import json, sys
for f in sys.argv[1:]:
    d = json.load(open(f)); s = d["heads"][0]["summary"]
    print(f"{f:40s} {d['model']} novel AP50 {s['novel']['AP50']:.4f} AP {s['novel']['AP']:.4f} | base AP50 {s['base']['AP50']:.4f} AP {s['base']['AP']:.4f} | all AP {s['all']['AP']:.4f} ({d['seconds']}s)")
