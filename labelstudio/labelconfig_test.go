package labelstudio

import (
	"errors"
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	cfg := `<View>
  <Header value="Find &amp; box&nbsp;things"/>
  <Image name="image" value="$image" zoom="true"/>
  <RectangleLabels name="label" toName="image" score_threshold="0.25">
    <Label value="Airplane" background="green"/>
    <Label value="Car" alias="C" predicted_values="car, truck"/>
  </RectangleLabels>
  <Choices name="quality" toName="image"><Choice value="good"/></Choices>
  <Labels name="ner" toName="text"><Label value="Person"/></Labels>
  <Text name="text" value="$text"/>
  <Image name="thumb" value="$thumb"/>
  <RectangleLabels name="small" toname="thumb"><Label value="dog"/></RectangleLabels>
  <RectangleLabels name="ocr" toName="text"><Label value="word"/></RectangleLabels>
</View>`
	got, err := ParseConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d controls, want 2 (the one on a Text is not an image's): %+v", len(got), got)
	}
	c := got[0]
	if c.Name != "label" || c.ToName != "image" || c.DataKey != "image" || c.ScoreThreshold == nil || *c.ScoreThreshold != 0.25 {
		t.Fatalf("first control %+v", c)
	}
	if len(c.Labels) != 2 || c.Labels[0].Reported() != "Airplane" || c.Labels[1].Value != "Car" || c.Labels[1].Reported() != "C" ||
		strings.Join(c.Labels[1].PredictedValues, "|") != "car|truck" {
		t.Fatalf("labels %+v", c.Labels)
	}
	if d := got[1]; d.Name != "small" || d.DataKey != "thumb" || d.ScoreThreshold != nil || len(d.Labels) != 1 || d.Labels[0].Value != "dog" {
		t.Fatalf("second control %+v", d)
	}
}

func TestParseConfigRefuses(t *testing.T) {
	many := "<View><Image name=\"i\" value=\"$image\"/>" + strings.Repeat(`<RectangleLabels name="l" toName="i"><Label value="a"/></RectangleLabels>`, MaxControls+1) + "</View>"
	for name, cfg := range map[string]string{
		"empty":           "",
		"not XML":         "<View><Image",
		"no rectangles":   `<View><Image name="image" value="$image"/><Choices name="c" toName="image"><Choice value="a"/></Choices></View>`,
		"no image":        `<View><RectangleLabels name="l" toName="image"><Label value="a"/></RectangleLabels></View>`,
		"literal image":   `<View><Image name="image" value="https://example.com/a.png"/><RectangleLabels name="l" toName="image"><Label value="a"/></RectangleLabels></View>`,
		"no labels":       `<View><Image name="image" value="$image"/><RectangleLabels name="l" toName="image"></RectangleLabels></View>`,
		"label no value":  `<View><Image name="image" value="$image"/><RectangleLabels name="l" toName="image"><Label background="red"/></RectangleLabels></View>`,
		"no name":         `<View><Image name="image" value="$image"/><RectangleLabels toName="image"><Label value="a"/></RectangleLabels></View>`,
		"bad threshold":   `<View><Image name="image" value="$image"/><RectangleLabels name="l" toName="image" score_threshold="2"><Label value="a"/></RectangleLabels></View>`,
		"nested controls": `<View><Image name="image" value="$image"/><RectangleLabels name="l" toName="image"><RectangleLabels name="m" toName="image"><Label value="a"/></RectangleLabels></RectangleLabels></View>`,
		"too many":        many,
	} {
		var ce *ConfigError
		if _, err := ParseConfig(cfg); !errors.As(err, &ce) || ce.Msg == "" {
			t.Errorf("%s: %v", name, err)
		}
	}
}
