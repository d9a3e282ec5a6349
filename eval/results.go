package eval

import (
	"fmt"
	"strings"
)

// BoxFromCorners is a detector's corner box (x1, y1, x2, y2 in float32) as a
// COCO box [x, y, width, height] in float64, converted as the Python
// evaluation converts: the corners widened first, then subtracted. Both
// `vild eval` and the COCO results `vild detect` writes use it, so a results
// file read back holds the very numbers the in-process evaluation scores.
func BoxFromCorners(b [4]float32) [4]float64 {
	x1, y1 := float64(b[0]), float64(b[1])
	return [4]float64{x1, y1, float64(b[2]) - x1, float64(b[3]) - y1}
}

// ReadResultsFile reads and validates a COCO results file (ParseResults),
// within MaxFileBytes.
func ReadResultsFile(path string) ([]ImageDetections, error) {
	data, err := readCapped(path)
	if err != nil {
		return nil, err
	}
	dets, err := ParseResults(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return dets, nil
}

// MapStats says what MapResults could not carry over.
type MapStats struct {
	// Images and Detections are the results' images and detections.
	Images, Detections int
	// UnknownImages are result images whose file_name the ground truth does
	// not list; their DroppedByImage detections are left out.
	UnknownImages, DroppedByImage int
	// UnknownCategories are dataset categories whose name the ground truth
	// does not list; their DroppedByCategory detections are left out.
	UnknownCategories, DroppedByCategory int
}

// MapResults carries detections whose ids are those of dataset (the COCO
// dataset written next to a results file) over to the ids of gt: an image by
// its file_name, a category by its name (case-insensitively, as ParseCOCO
// keeps names unique). Detections of images or categories gt does not list are
// left out and counted. A result id the dataset does not list is an error.
// The order of images and of detections within an image is kept.
func MapResults(dets []ImageDetections, dataset, gt *COCO) ([]ImageDetections, MapStats, error) {
	gtImages := make(map[string]int64, len(gt.Images))
	for _, im := range gt.Images {
		gtImages[im.FileName] = im.ID
	}
	gtCats := make(map[string]int64, len(gt.Categories))
	for _, c := range gt.Categories {
		gtCats[strings.ToLower(c.Name)] = c.ID
	}
	imageIDs := make(map[int64]int64, len(dataset.Images)) // dataset id -> gt id; -1: not in gt
	for _, im := range dataset.Images {
		id, ok := gtImages[im.FileName]
		if !ok {
			id = -1
		}
		imageIDs[im.ID] = id
	}
	catIDs := make(map[int64]int64, len(dataset.Categories)) // dataset id -> gt id; -1: not in gt
	var st MapStats
	for _, c := range dataset.Categories {
		id, ok := gtCats[strings.ToLower(c.Name)]
		if !ok {
			id = -1
			st.UnknownCategories++
		}
		catIDs[c.ID] = id
	}
	out := make([]ImageDetections, 0, len(dets))
	for _, d := range dets {
		st.Images++
		st.Detections += len(d.Detections)
		img, ok := imageIDs[d.ImageID]
		if !ok {
			return nil, st, fmt.Errorf("%w: result image_id %d is not in the dataset file", ErrInvalid, d.ImageID)
		}
		if img < 0 {
			st.UnknownImages++
			st.DroppedByImage += len(d.Detections)
			continue
		}
		m := ImageDetections{ImageID: img, Detections: make([]Detection, 0, len(d.Detections))}
		for _, x := range d.Detections {
			cat, ok := catIDs[x.CategoryID]
			if !ok {
				return nil, st, fmt.Errorf("%w: result category_id %d is not in the dataset file", ErrInvalid, x.CategoryID)
			}
			if cat < 0 {
				st.DroppedByCategory++
				continue
			}
			x.CategoryID = cat
			m.Detections = append(m.Detections, x)
		}
		out = append(out, m)
	}
	return out, st, nil
}

// OnImages keeps the detections of the images gt lists (as --limit needs: a
// results file for every image, evaluated on the first N).
func OnImages(dets []ImageDetections, gt *COCO) []ImageDetections {
	keep := make(map[int64]bool, len(gt.Images))
	for _, im := range gt.Images {
		keep[im.ID] = true
	}
	out := make([]ImageDetections, 0, len(dets))
	for _, d := range dets {
		if keep[d.ImageID] {
			out = append(out, d)
		}
	}
	return out
}
