"""From splat to mesh (docs/design.md section 8): the solid carved by the splat's own renders (``carve``) or its
opacity field, marching cubes and cleanup (``extract``), and how a mesh is judged (``evaluate``)."""
