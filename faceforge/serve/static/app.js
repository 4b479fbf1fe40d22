// faceforge demo page: upload -> /api/analyze -> verdict, P(fake) over time (inline SVG: per frame, or per clip for a
// clip model), three.js viewer of the GLB.
import * as THREE from 'three';
import { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';

const $ = (id) => document.getElementById(id);
const BACKGROUND = 0xf2f2f2;
let viewer = null;

function showError(message) {
  $('error').textContent = message;
  $('error').hidden = false;
}

function pct(p) { return (100 * p).toFixed(1) + ' %'; }

function renderVerdict(v) {
  const el = $('verdict');
  if (!v) { el.textContent = 'No detection model loaded.'; return; }
  if (v.status !== 'ok') { el.textContent = v.message; el.className = ''; return; }
  el.innerHTML = '';
  const word = document.createElement('span');
  word.className = v.decision;
  word.id = 'decision';
  word.textContent = v.decision.toUpperCase();
  el.append(word, ` P(fake) = ${pct(v.p_fake)} (confidence ${pct(v.confidence)}, ${v.faces} face(s))`);
}

// frames: [{time_s, p_fake}] of a frame model; clips: [{start_s, end_s, p_fake}] of a clip model (one bar each)
function renderChart(frames, clips, threshold) {
  const box = $('chart');
  box.innerHTML = '';
  const byClip = Array.isArray(clips) && clips.length > 0;
  if (!byClip && (!frames || frames.length < 2)) return;
  const W = 640, H = 200, L = 40, R = 10, T = 10, B = 30;
  const tMax = (byClip ? Math.max(...clips.map((c) => c.end_s)) : Math.max(...frames.map((f) => f.time_s))) || 1;
  const x = (t) => L + (W - L - R) * t / tMax;
  const y = (p) => T + (H - T - B) * (1 - p);
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('width', W);
  svg.id = 'frame-chart';
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.append(e);
    return e;
  };
  add('line', { x1: L, y1: y(0), x2: W - R, y2: y(0), stroke: '#888' });
  add('line', { x1: L, y1: y(0), x2: L, y2: y(1), stroke: '#888' });
  add('line', { x1: L, y1: y(threshold), x2: W - R, y2: y(threshold), stroke: '#b3261e', 'stroke-dasharray': '4 3' });
  for (const p of [0, 0.5, 1]) add('text', { x: 4, y: y(p) + 4 }, p.toFixed(1));
  add('text', { x: W / 2 - 40, y: H - 6 }, `time (s) \u2192 P(fake) per ${byClip ? 'clip' : 'frame'}`);
  add('text', { x: W - R - 30, y: H - 16 }, tMax.toFixed(1));
  if (byClip) {
    svg.id = 'clip-chart';
    for (const c of clips) {  // a clip spans its first to its last face; a short stroke where both are one
      const x1 = x(c.start_s), x2 = Math.max(x(c.end_s), x1 + 4);
      add('line', { x1, y1: y(c.p_fake), x2, y2: y(c.p_fake), stroke: '#1a5fb4', 'stroke-width': 6,
                    class: 'clip-bar' });
    }
  } else {
    add('polyline', { fill: 'none', stroke: '#1a5fb4', 'stroke-width': 2,
                      points: frames.map((f) => `${x(f.time_s)},${y(f.p_fake)}`).join(' ') });
    for (const f of frames) add('circle', { cx: x(f.time_s), cy: y(f.p_fake), r: 3, fill: '#1a5fb4' });
  }
  box.append(svg);
}

function ensureViewer() {
  if (viewer) return viewer;
  const canvas = $('viewer');
  const renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
  renderer.setClearColor(BACKGROUND, 1);
  const scene = new THREE.Scene();
  scene.add(new THREE.HemisphereLight(0xffffff, 0x444444, 2.0));
  const sun = new THREE.DirectionalLight(0xffffff, 1.5);
  sun.position.set(-1, 1, 2);
  scene.add(sun);
  const camera = new THREE.PerspectiveCamera(35, canvas.width / canvas.height, 0.1, 10000);
  const controls = new OrbitControls(camera, canvas);
  controls.enableDamping = true;
  viewer = { renderer, scene, camera, controls, model: null };
  const loop = () => { controls.update(); renderer.render(scene, camera); requestAnimationFrame(loop); };
  loop();
  return viewer;
}

function showMesh(url) {
  const v = ensureViewer();
  new GLTFLoader().load(url, (gltf) => {
    if (v.model) v.scene.remove(v.model);
    v.model = gltf.scene;
    // a photo texture, not metal: glTF's default metalness (1) would draw it almost black
    v.model.traverse((o) => { if (o.isMesh) { o.material.metalness = 0; o.material.roughness = 1; } });
    v.scene.add(v.model);
    const sphere = new THREE.Box3().setFromObject(v.model).getBoundingSphere(new THREE.Sphere());
    v.controls.target.copy(sphere.center);
    v.camera.position.copy(sphere.center).add(new THREE.Vector3(0, 0, sphere.radius * 3.2));
    v.camera.near = sphere.radius / 100;
    v.camera.far = sphere.radius * 100;
    v.camera.updateProjectionMatrix();
    $('viewer').dataset.loaded = 'true';
  }, undefined, (err) => showError('the 3D face could not be shown: ' + err));
}

async function loadInfo() {
  try {
    const info = await (await fetch('/api/info')).json();
    $('limits').textContent = `up to ${info.max_upload_mb} MB; videos up to ${info.max_video_s} s`;
  } catch (e) { /* the page still works */ }
}

$('upload-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('error').hidden = true;
  const file = $('file-input').files[0];
  if (!file) { showError('choose an image or a video first'); return; }
  const body = new FormData();
  body.append('file', file, file.name);
  $('busy').hidden = false;
  $('submit').disabled = true;
  try {
    const response = await fetch('/api/analyze', { method: 'POST', body });
    let data;
    try { data = await response.json(); } catch (e) { data = { error: `server answered ${response.status}` }; }
    if (!response.ok) { showError(data.error || `server answered ${response.status}`); return; }
    $('result').hidden = false;
    renderVerdict(data.verdict);
    const video = data.kind === 'video' && data.verdict;
    renderChart(video ? data.verdict.frames : null, video ? data.verdict.clips : null,
                data.verdict ? data.verdict.threshold : 0.5);
    $('viewer-section').hidden = false;
    $('mesh-note').textContent = data.mesh_url ? '' : (data.mesh_error || '');
    if (data.mesh_url) showMesh(data.mesh_url);
  } catch (e) {
    showError('the upload failed: ' + e);
  } finally {
    $('busy').hidden = true;
    $('submit').disabled = false;
  }
});

loadInfo();
