package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"net/http/httptest"
	"os"

	"github.com/vild/vild/api"
	"github.com/vild/vild/client"
	"github.com/vild/vild/detector"
	"github.com/vild/vild/handlers"
	"github.com/vild/vild/handlers/handlerstest"
)

func ExampleClient_Detect() {
	url, stop := exampleServer() // "http://127.0.0.1:8080" for `vild serve`
	defer stop()
	c, err := client.New(url, client.WithAPIKey(os.Getenv("VILD_API_KEY")))
	if err != nil {
		fmt.Println(err)
		return
	}
	img := examplePicture() // os.ReadFile("scene.png")
	res, err := c.Detect(context.Background(), img, api.DetectOptions{Categories: []string{"red square", "blue square"}})
	var pe *client.Error
	if errors.As(err, &pe) {
		fmt.Println(pe.Status, pe.Slug(), pe.Detail, pe.RequestID)
		return
	}
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.Image.Width, "×", res.Image.Height)
	for _, d := range res.Detections {
		fmt.Printf("%s %.2f %v\n", d.Label, d.Score, d.Box)
	}
	// Output:
	// 200 × 120
	// red square 1.00 [20 20 60 60]
	// blue square 1.00 [100 40 150 90]
}

// exampleServer serves the API over the tests' colour detector, on 127.0.0.1.
func exampleServer() (url string, stop func()) {
	cfg := handlers.DefaultConfig()
	model := api.Model{ID: "colors@0123", Defaults: detector.Options{ScoreThreshold: 0.3, NMSIoU: 0.5, MaxDetections: 100}}
	h, err := handlers.New(handlers.Deps{Detector: &handlerstest.ColorDetector{}, Embedder: &handlerstest.ColorEmbedder{},
		Decoder: handlerstest.Decoder{MaxSide: cfg.MaxImageSide, MaxPixels: cfg.MaxImagePixels}, Model: model, Config: cfg})
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(h)
	return srv.URL, srv.Close
}

// examplePicture is scenePNG without a testing.TB.
func examplePicture() []byte {
	img := image.NewRGBA(image.Rect(0, 0, 200, 120))
	draw.Draw(img, img.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	draw.Draw(img, image.Rect(20, 20, 60, 60), image.NewUniform(color.RGBA{255, 0, 0, 255}), image.Point{}, draw.Src)
	draw.Draw(img, image.Rect(100, 40, 150, 90), image.NewUniform(color.RGBA{0, 0, 255, 255}), image.Point{}, draw.Src)
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		panic(err)
	}
	return b.Bytes()
}
