// imagebuild assembles the bundled images. It is its own module on purpose:
// nothing here may reach the main bramble go.mod. Standard library only.
module github.com/bramble-pi/bramble/tools/imagebuild

go 1.26
