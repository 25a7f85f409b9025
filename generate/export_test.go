package generate

// ForceRootless makes Bundle and Spec write a rootless bundle (or, false,
// a root one) whoever runs the test, so the rootless code paths run under
// root too.
func ForceRootless(o *Options, v bool) { o.rootless = &v }
