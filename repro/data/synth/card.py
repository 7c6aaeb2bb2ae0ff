"""The dataset card (``README.md`` at the dataset root) of a generated synthetic BOP dataset.

The card is built only from the generator's summary (no timestamps, no absolute paths), so it is
as deterministic as the data it describes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from repro.fileio import atomic_write_text

_LAYOUT = """\
```
README.md                    this card
synth_config.json            generator, version, preset, seed, renderer, full config, objects
camera.json                  nominal intrinsics and depth_scale
models/ , models_eval/       obj_XXXXXX.ply (mm, per-vertex normals and colours) + models_info.json
                             (diameter, min_x/y/z, size_x/y/z, symmetries_discrete,
                             symmetries_continuous, plus name, description, kind, textured, key)
test/XXXXXX/                 rgb/ depth/ mask/ mask_visib/ scene_camera.json scene_gt.json
                             scene_gt_info.json   (BOP layout; cam_R_w2c / cam_t_w2c included)
test_targets_bop19.json      per test image and object: inst_count = instances with visib_fract >= {min_visib}
train_pbr/XXXXXX/            same files as test/ (more objects and clutter), no targets
video/XXXXXX/                one scene per sequence, im_id = frame index, same files as test/ plus
  scene_sequence.json        fps, timestamps, drop protocol (dropped_im_ids), occluder frames,
                             moving objects (gt_id, displacement, yaw), per-frame flags
  occluder_mask/XXXXXX.png   visible pixels of the passing occluder (frames listed in the sidecar)
video_targets_bop19.json     targets of the video frames (same rule as the test targets)
video_drop_targets_bop19.json  the video targets without the drop protocol's dropped frames (a tracker
                             under the protocol never sees them and they are not scored)
onboarding/OOOOOO/           posed reference views of object OOOOOO (scene id = obj id, im_id = view):
                             rgb/ depth/ mask/ mask_visib/ scene_camera.json (cam_K) scene_gt.json
                             (cam_R_m2c, cam_t_m2c: model-to-camera, mm) scene_gt_info.json
onboarding_static/obj_OOOOOO/ ref_XXXX_rgb.png, ref_XXXX_mask.png (plain background, 0/255 mask)
                             and refs.json (name, description, background colour, K, poses)
```"""

_LOADING = """\
```python
from repro.data.bop import BopDataset

test = BopDataset(root, split="test")                                   # targets from test_targets_bop19.json
train = BopDataset(root, split="train_pbr")
video = BopDataset(root, split="video", targets="video_targets_bop19.json")       # frame.video is True
video_drop = BopDataset(root, split="video", targets="video_drop_targets_bop19.json")  # drop protocol
onboarding = BopDataset(root, split="onboarding", targets=None)         # scene id = object id
```"""


def _fmt(x: float) -> str:
    return f"{x:.1f}"


def render_card(summary: Mapping[str, Any]) -> str:
    """Markdown text of the card for a ``generate_bop_dataset`` summary."""
    cfg = summary["config"]
    lines = [
        f"# Synthetic BOP dataset — preset `{summary['preset']}`, seed {summary['seed']}",
        "",
        "**This dataset is synthetic.** Every object, texture, scene and image was generated procedurally by "
        f"pose-repro's `{summary['generator']}` (generator version {summary['generator_version']}) and rendered "
        f"with the `{summary['renderer']}` backend of `repro.render`. It contains no real photographs and no "
        "scanned models; numbers measured on it show that a pipeline runs and behaves sensibly, not how it would "
        "score on a real benchmark.",
        "",
        "## Objects",
        "",
        "Units are millimetres; models are centred on their bounding box. Diameters are the largest distance "
        "between two model vertices (as bop_toolkit computes them). Symmetries are given in "
        "`models_info.json` exactly as BOP stores them and were verified numerically when the data was "
        "generated (every symmetry maps the model's vertices onto vertices of the same colour).",
        "",
        "| obj_id | name | kind | appearance | symmetries | diameter (mm) | vertices | description |",
        "|---:|---|---|---|---|---:|---:|---|",
    ]
    for o in summary["objects"]:
        appearance = "textured" if o["textured"] else "plain colours"
        lines.append(f"| {o['obj_id']} | {o['name']} | {o['kind']} | {appearance} | {o['symmetry']} | "
                     f"{_fmt(o['diameter'])} | {o['n_vertices']} | {o['description']} |")
    lines += ["", "## Splits", "",
              "| split | scenes | images | GT instances | targets | target instances |",
              "|---|---:|---:|---:|---:|---:|"]
    for name, s in summary["splits"].items():
        lines.append(f"| {name} | {s['n_scenes']} | {s['n_images']} | {s['n_gt']} | {s['n_targets']} | "
                     f"{s['n_target_instances']} |")
    onb = summary["onboarding"]
    lines += [
        f"| onboarding | {onb['n_objects']} | {onb['n_objects'] * onb['n_views']} | "
        f"{onb['n_objects'] * onb['n_views']} | – | – |",
        "",
        f"Images (onboarding included) are {cfg['width']}x{cfg['height']} pixels; depth PNGs are uint16 with "
        f"depth_scale {cfg['depth_scale']} (value x scale = mm). Everything is rendered with bop_toolkit's pixel "
        "convention (pixel (u, v) shows image point (u + 0.5, v + 0.5)), the one real BOP annotations and "
        "the metric engine's VSD renders use.",
        "",
        "## Layout",
        "",
        _LAYOUT.format(min_visib=cfg["min_visib_fract"]),
        "",
        "## Loading",
        "",
        _LOADING,
        "",
        "## How it was made",
        "",
        "- **Objects**: meshes built from primitives (boxes, surfaces of revolution, tori, cones) with dense "
        "per-vertex colours; textured objects carry a procedurally generated label image baked into the vertex "
        "colours, textureless ones a plain colour, and symmetric ones only appearance that respects their "
        "symmetry (bands along the axis). The object library does not depend on the seed.",
        f"- **Scenes** (`test`, `train_pbr`): {cfg['test']['n_objects'][0]}–{cfg['test']['n_objects'][1]} "
        f"(train: {cfg['train']['n_objects'][0]}–{cfg['train']['n_objects'][1]}) annotated objects resting on a "
        "table in random stable poses, occasionally a second instance of one object, plus unannotated distractor "
        "primitives; a procedural table texture (noise, stripes, checker or blobs) and a gradient-and-noise "
        "background; one directional light plus ambient term with random direction and strength, a colour tint "
        f"and Gaussian sensor noise (sigma {cfg['rgb_noise_sigma']} grey levels). Cameras look at the objects "
        f"from elevations {cfg['camera_elevation_deg'][0]:g}–{cfg['camera_elevation_deg'][1]:g} degrees, any "
        f"azimuth and distances {cfg['camera_distance'][0]:g}–{cfg['camera_distance'][1]:g} mm, with up to "
        f"{cfg['camera_roll_deg']:g} degrees of roll.",
        f"- **Annotations** follow bop_toolkit's `calc_gt_masks.py` and `calc_gt_info.py`: each object is "
        "rendered alone on a canvas three times the image size (so truncated parts count in `px_count_all` and "
        "`bbox_obj`); a pixel of the object is visible when the scene's stored depth (as a distance image) is "
        f"missing or at most {cfg['visib_delta']:g} mm in front of the object's own distance (`bop19` mode). "
        "`visib_fract = px_count_visib / px_count_all`.",
        f"- **Video** (`video`): {cfg['video']['n_sequences']} sequence(s) of {cfg['video']['n_frames']} frames "
        f"at {cfg['video']['fps']:g} fps: the camera orbits the table smoothly while up to "
        f"{cfg['video']['n_moving']} object(s) slide and turn on the table; during a window of frames a "
        "cylinder crosses between the camera and the objects (it is rendered into colour and depth, so it "
        "really occludes). The drop protocol in `scene_sequence.json` lists frames a fast-motion evaluation "
        "skips; the frames themselves are all present, and `video_drop_targets_bop19.json` holds the targets "
        "of the frames that remain.",
        f"- **Onboarding**: per object {onb['n_views']} views from directions spread over the whole sphere "
        "(Fibonacci spiral), each camera looking at the bounding-box centre from a distance that keeps the "
        f"whole object in view, on a plain background; and {onb['n_static']} STORM-style masked reference "
        "images from the upper hemisphere.",
        "- **Determinism**: every scene, image, sequence and object draws from its own random generator seeded "
        "by (seed, stream, index); the same preset, seed and renderer backend give byte-identical files.",
        "- **Not modelled**: shadows, specular highlights, inter-reflections, anti-aliasing, motion blur and "
        "depth-sensor noise or holes (depth is exact rendered z).",
        "",
        "## Reproduce",
        "",
        "```",
        f"repro data synth --preset {summary['preset']} --kind bop --seed {summary['seed']} --out DIR",
        "```",
        "",
        "or `repro.data.synth.generate_bop_dataset(DIR, preset=..., seed=...)` from Python.",
        "",
    ]
    return "\n".join(lines)


def write_card(root: str | Path, summary: Mapping[str, Any]) -> Path:
    """Write ``README.md`` into the dataset root (atomically)."""
    return atomic_write_text(Path(root) / "README.md", render_card(summary))
