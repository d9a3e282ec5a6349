package labelstudio

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Label is one <Label> of a RectangleLabels tag: Value is the category the
// detector looks for, Alias (when set) what the result reports, as Label
// Studio itself stores an aliased label; PredictedValues (the
// predicted_values attribute, comma-separated) are more names for the same
// category, reported as Value.
type Label struct {
	Value, Alias    string
	PredictedValues []string
}

// Reported is the name a result carries: the alias, else the value.
func (l Label) Reported() string {
	if l.Alias != "" {
		return l.Alias
	}
	return l.Value
}

// Control is one RectangleLabels tag and the Image tag it labels.
type Control struct {
	Name   string // from_name
	ToName string // to_name: the Image tag's name
	// DataKey is the task data field of the image (the Image tag's value
	// "$image" is the field image).
	DataKey string
	Labels  []Label
	// ScoreThreshold is the tag's score_threshold attribute (nil: the
	// model's default).
	ScoreThreshold *float32
}

// MaxControls caps the RectangleLabels tags of one label config.
const MaxControls = 8

// ConfigError is a label config this backend cannot serve; Msg says why,
// naming no input.
type ConfigError struct{ Msg string }

func (e *ConfigError) Error() string { return "labelstudio: label config: " + e.Msg }

func configError(format string, a ...any) error {
	return &ConfigError{Msg: fmt.Sprintf(format, a...)}
}

// ParseConfig reads a Label Studio label config (XML) and returns its
// RectangleLabels tags that label an Image, in document order. Tags of other
// kinds are ignored; a config without a usable RectangleLabels is an error.
func ParseConfig(config string) ([]Control, error) {
	dec := xml.NewDecoder(strings.NewReader(config))
	dec.Strict = false // label configs are hand-written; HTML entities and loose markup occur
	dec.Entity = xml.HTMLEntity
	dec.AutoClose = xml.HTMLAutoClose
	images := map[string]string{} // Image name → data key
	var controls []Control
	var cur *Control
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, configError("not valid XML")
		}
		switch t := tok.(type) {
		case xml.StartElement:
			a := attrs(t)
			switch strings.ToLower(t.Name.Local) {
			case "image":
				v := a["value"]
				if strings.HasPrefix(v, "$") && len(v) > 1 && a["name"] != "" {
					images[a["name"]] = v[1:]
				}
			case "rectanglelabels":
				if cur != nil {
					return nil, configError("a RectangleLabels tag inside another")
				}
				if len(controls) == MaxControls {
					return nil, configError("more than %d RectangleLabels tags", MaxControls)
				}
				cur = &Control{Name: a["name"], ToName: a["toname"]}
				if s, ok := a["score_threshold"]; ok {
					f, err := strconv.ParseFloat(strings.TrimSpace(s), 32)
					if err != nil || !(f >= 0 && f <= 1) {
						return nil, configError("a RectangleLabels score_threshold must be a number in [0, 1]")
					}
					t := float32(f)
					cur.ScoreThreshold = &t
				}
			case "label":
				if cur == nil {
					continue // a Label of another control (Labels, Choices' siblings)
				}
				l := Label{Value: strings.TrimSpace(a["value"]), Alias: strings.TrimSpace(a["alias"])}
				for _, p := range strings.Split(a["predicted_values"], ",") {
					if p = strings.TrimSpace(p); p != "" {
						l.PredictedValues = append(l.PredictedValues, p)
					}
				}
				if l.Value == "" {
					return nil, configError("a Label without a value")
				}
				cur.Labels = append(cur.Labels, l)
			}
		case xml.EndElement:
			if strings.EqualFold(t.Name.Local, "rectanglelabels") && cur != nil {
				controls = append(controls, *cur)
				cur = nil
			}
		}
	}
	var out []Control
	for _, c := range controls {
		if c.Name == "" || c.ToName == "" {
			return nil, configError("a RectangleLabels tag needs name and toName")
		}
		key, ok := images[c.ToName]
		if !ok {
			continue // labels something other than an Image with a $field value
		}
		if len(c.Labels) == 0 {
			return nil, configError("a RectangleLabels tag has no Label")
		}
		c.DataKey = key
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, configError(`no RectangleLabels tag labels an Image whose value is a task field ("$image")`)
	}
	return out, nil
}

// attrs are a tag's attributes by lower-case name (Label Studio's are
// case-insensitive: toName, toname).
func attrs(t xml.StartElement) map[string]string {
	m := make(map[string]string, len(t.Attr))
	for _, a := range t.Attr {
		m[strings.ToLower(a.Name.Local)] = a.Value
	}
	return m
}
