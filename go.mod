module github.com/vild/vild

go 1.26
