// The pause (sandbox) binary. Its own module so it never touches the main
// bramble go.mod; standard library only.
module github.com/bramble-pi/bramble/images/pause

go 1.26
