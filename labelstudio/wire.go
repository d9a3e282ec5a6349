package labelstudio

import (
	"encoding/json"
	"strings"
)

// The JSON of Label Studio's ML backend protocol, as Label Studio sends and
// reads it (label-studio-ml-backend's api.py; Label Studio's ml/api_connector.py).

// Health is the answer of GET /health.
type Health struct {
	Status       string `json:"status" example:"UP"`
	ModelClass   string `json:"model_class" example:"vild"`
	ModelVersion string `json:"model_version" example:"pictogram-vild@1a2b3c4d"`
}

// SetupRequest is the body of POST /setup, sent when a model is connected
// and when the project's label config changes.
type SetupRequest struct {
	// Project is "ID.created-at" (a string; older versions send a number).
	Project ProjectID `json:"project" swaggertype:"string" example:"1.1733220000"`
	// Schema is the project's label config (XML).
	Schema string `json:"schema"`
	// Hostname is Label Studio's address, for its relative upload paths.
	Hostname string `json:"hostname" example:"http://localhost:8080"`
	// AccessToken is a Label Studio token for fetching uploads from Hostname.
	AccessToken string `json:"access_token"`
}

// SetupResponse is the answer of POST /setup.
type SetupResponse struct {
	ModelVersion string `json:"model_version" example:"pictogram-vild@1a2b3c4d"`
}

// PredictRequest is the body of POST /predict.
type PredictRequest struct {
	Tasks       []Task    `json:"tasks"`
	Project     ProjectID `json:"project" swaggertype:"string" example:"1.1733220000"`
	LabelConfig string    `json:"label_config"`
}

// Task is one Label Studio task; only its id and data are read.
type Task struct {
	ID   int64          `json:"id" example:"1"`
	Data map[string]any `json:"data"`
}

// PredictResponse is the answer of POST /predict: one prediction per task,
// in the order of the tasks.
type PredictResponse struct {
	Results      []Prediction `json:"results"`
	ModelVersion string       `json:"model_version" example:"pictogram-vild@1a2b3c4d"`
}

// Prediction is one task's pre-annotation.
type Prediction struct {
	Result []Region `json:"result"`
	// Score is the mean of the regions' scores (0 without regions): Label
	// Studio sorts tasks by it.
	Score        float64 `json:"score"`
	ModelVersion string  `json:"model_version"`
}

// Region is one box, in percent of the original image's size.
type Region struct {
	ID             string      `json:"id" example:"r0"`
	FromName       string      `json:"from_name" example:"label"`
	ToName         string      `json:"to_name" example:"image"`
	Type           string      `json:"type" example:"rectanglelabels"`
	OriginalWidth  int         `json:"original_width" example:"640"`
	OriginalHeight int         `json:"original_height" example:"480"`
	ImageRotation  int         `json:"image_rotation" example:"0"`
	Value          RegionValue `json:"value"`
	Score          float64     `json:"score" example:"0.93"`
}

// RegionValue is a rectangle in percent of the image (0–100) with its label.
type RegionValue struct {
	X               float64  `json:"x" example:"12.5"`
	Y               float64  `json:"y" example:"30"`
	Width           float64  `json:"width" example:"20"`
	Height          float64  `json:"height" example:"15.5"`
	Rotation        float64  `json:"rotation" example:"0"`
	RectangleLabels []string `json:"rectanglelabels"`
}

// ProjectID is Label Studio's project reference, a string or a number.
type ProjectID string

// UnmarshalJSON takes a string, a number or null.
func (p *ProjectID) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*p = ProjectID(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		if strings.TrimSpace(string(b)) == "null" {
			*p = ""
			return nil
		}
		return err
	}
	*p = ProjectID(n.String())
	return nil
}
