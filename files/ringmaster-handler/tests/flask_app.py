"""A small Flask app for the framework integration test."""

import hashlib

from flask import Flask, Response, jsonify, request

app = Flask(__name__)


@app.get("/")
def index():
    return "Hello from Flask"


@app.post("/echo")
def echo():
    return jsonify(
        form=request.form.to_dict(),
        args=request.args.to_dict(),
        json=request.get_json(silent=True),
        script_root=request.script_root,
        path=request.path,
    )


@app.post("/upload")
def upload():
    f = request.files["file"]
    h = hashlib.sha256()
    size = 0
    while block := f.stream.read(1 << 16):
        h.update(block)
        size += len(block)
    return jsonify(name=f.filename, size=size, sha256=h.hexdigest())


@app.get("/stream")
def stream():
    def gen():
        for i in range(100):
            yield f"line {i}\n"

    return Response(gen(), mimetype="text/plain")


@app.get("/fail")
def fail():
    raise RuntimeError("flask view failed (expected by the test)")


@app.get("/cookie")
def cookie():
    resp = jsonify(cookies=request.cookies)
    resp.set_cookie("a", "1")
    resp.set_cookie("b", "2")
    return resp
